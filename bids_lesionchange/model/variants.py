"""The detector configurations of To et al. 2021, Table 1, by name (overrides of DetectorParams)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bids_lesionchange.params import DetectorParams

_PLAIN = dict(architecture="unet", inception=False, attention_gates=False, multiscale_inputs=False,
              deep_supervision=False, l2=0.0)
_FULL = dict(inception=True, attention_gates=True, multiscale_inputs=True, deep_supervision=True)

#: name -> DetectorParams overrides. "siamese-l2e-6-g1.0" is the paper's best LTPR model.
VARIANTS: dict[str, dict[str, Any]] = {
    "unet-bce": dict(_PLAIN, loss="bce"),
    "unet-ftl": dict(_PLAIN, loss="focal_tversky", gamma_final=1.0),
    "unet-ag-ms-ds": dict(_PLAIN, loss="focal_tversky", gamma_final=1.0, attention_gates=True,
                          multiscale_inputs=True, deep_supervision=True),
    "unet-inc-ag-ms-ds": dict(_PLAIN, loss="focal_tversky", gamma_final=1.0, **_FULL),
    "siamese-l2e-6-g1.0": dict(_FULL, architecture="siamese", loss="focal_tversky", l2=1e-6, gamma_final=1.0),
    "siamese-l2e-4-g1.0": dict(_FULL, architecture="siamese", loss="focal_tversky", l2=1e-4, gamma_final=1.0),
    "siamese-l2e-6-g0.75": dict(_FULL, architecture="siamese", loss="focal_tversky", l2=1e-6, gamma_final=0.75),
    "siamese-l2e-4-g0.75": dict(_FULL, architecture="siamese", loss="focal_tversky", l2=1e-4, gamma_final=0.75),
}


def variant_params(name: str, base: DetectorParams | None = None) -> DetectorParams:
    """Return ``base`` (default DetectorParams()) with the overrides of Table 1 variant ``name``.

    Sizes (base_filters, levels, normalization) come from ``base``; the variant sets the
    architecture, blocks and loss. A ``--config`` file reaches the same result with a
    ``[detector]`` section holding these keys.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant '{name}'; choose one of {', '.join(VARIANTS)}")
    return replace(base or DetectorParams(), **VARIANTS[name])
