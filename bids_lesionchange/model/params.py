"""Hyper-parameters of the VAE, SuperMix and the change detector (pure dataclasses, no TensorFlow).

Two presets: ``cpu`` (sized for a 2-core machine, the default) and ``paper`` (To et al. 2021,
section 4, for a GPU). Any field can be overridden by a ``--config`` YAML/TOML file with the
sections ``vae``, ``supermix``, ``detector`` and ``training``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class VAEParams:
    """Architecture and training of the VAE that makes the reconstructions SuperMix mixes in."""

    crop_shape: tuple[int, int, int] = (64, 64, 16)
    base_filters: int = 8
    levels: int = 3
    latent_channels: int = 8
    pooling: str = "maxpool"  # "maxpool" (the paper's choice) or "strided"
    kl_weight: float = 1e-3
    delta: float = 5.0  # latent perturbation z * U(-delta, delta)
    learning_rate: float = 5e-5
    iterations: int = 20
    crops_per_iteration: int = 64
    batch_size: int = 2


@dataclass(frozen=True)
class SuperMixParams:
    """SuperMix: SLIC superpixels kept with probability tau, else replaced by the VAE output."""

    tau: float = 0.98
    n_segments_min: int = 200
    n_segments_max: int = 5000
    compactness: float = 0.1
    min_label_voxels: int = 0
    slic_downsample: int = 2  # SLIC runs on a grid this many times coarser (1 = full resolution)
    slic_iterations: int = 10


@dataclass(frozen=True)
class DetectorParams:
    """Architecture and loss of the change detector (siamese 3D U-net by default)."""

    architecture: str = "siamese"  # "siamese" or "unet" (two-channel, not siamese)
    base_filters: int = 8
    levels: int = 3
    inception: bool = True
    attention_gates: bool = True
    multiscale_inputs: bool = True
    deep_supervision: bool = True
    loss: str = "focal_tversky"  # "focal_tversky" or "bce"
    alpha: float = 0.75
    gamma_final: float = 1.0
    gamma_intermediate: float = 0.75
    l2: float = 1e-6
    normalization: str = "none"  # "none" or "group" (GroupNorm; BatchNorm is not offered: slow at CPU inference)
    deep_supervision_weight: float = 0.5  # weight of each intermediate output's loss (final output: 1)


@dataclass(frozen=True)
class TrainingParams:
    """Optimisation schedule of the detector."""

    crop_shape: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    iterations: int = 40
    pairs_per_iteration: int = 20
    learning_rate: float = 2e-4
    decay: float = 1e-3
    validation_fraction: float = 0.2
    validation_crops: int = 6
    swap_sessions: bool = True  # also train with baseline and follow-up roles exchanged
    min_brain_fraction: float = 0.25  # a training crop holds at least this fraction of brain voxels
    # Unlabelled nuisance on one session of most samples: a smooth multiplicative field of up to
    # +-this fraction and a gamma of up to exp(+-this), so residual bias and contrast differences
    # between scans are not read as change (0: off, the paper's setting).
    intensity_augmentation: float = 0.1
    # Unlabelled acquisition nuisance on each crop (independent noise, blur or one thick-slice
    # protocol with its own slice offsets, a sub-voxel shift of the reference): up to this noise
    # sigma; 0: off (the paper's setting and the default: with it and self-pairs a model stopped
    # detecting lesions, see docs/benchmarks.md).
    acquisition_augmentation: float = 0.0
    # How preprocessing maps intensities to [0, 1] for this model: "percentile" (the paper's 0-99th,
    # the default) or "wm-peak" (white-matter peak at 0.5; not yet shown to detect better).
    intensity_normalisation: str = "percentile"
    threshold: float = 0.1  # kappa of the paper, for the validation Dice and lesion counts
    min_blob_size: int = 20
    graph_mode: bool = True  # compile training steps with tf.function (tracing costs 10-30 s; False for tiny runs)
    seed: int = 0


@dataclass(frozen=True)
class HyperParams:
    """All hyper-parameters of one training run."""

    preset: str = "cpu"
    vae: VAEParams = field(default_factory=VAEParams)
    supermix: SuperMixParams = field(default_factory=SuperMixParams)
    detector: DetectorParams = field(default_factory=DetectorParams)
    training: TrainingParams = field(default_factory=TrainingParams)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)


PRESETS: dict[str, HyperParams] = {
    "cpu": HyperParams(),
    "paper": HyperParams(
        preset="paper",
        vae=VAEParams(
            crop_shape=(192, 192, 16), base_filters=16, levels=4, latent_channels=16,
            iterations=200, crops_per_iteration=4096, batch_size=2,
        ),
        detector=DetectorParams(base_filters=16, levels=4, l2=1e-6, gamma_final=1.0),
        training=TrainingParams(
            crop_shape=(192, 192, 16), batch_size=2, iterations=60, pairs_per_iteration=100,
            validation_crops=16, intensity_augmentation=0.0,
        ),
    ),
}


def _coerce(value: Any, current: Any) -> Any:
    if isinstance(current, tuple):
        return tuple(type(current[0])(v) for v in value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true/false, got {value!r}")
        return value
    if isinstance(current, (int, float)) and not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return type(current)(value)


def _override(obj: Any, section: str, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown hyper-parameter '{section}.{key}'; known: {', '.join(sorted(known))}"
            )
        try:
            changes[key] = _coerce(value, getattr(obj, key))
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad value for '{section}.{key}': {err}") from None
    return replace(obj, **changes)


def hyperparams_from_mapping(preset: str = "cpu", overrides: Mapping[str, Any] | None = None) -> HyperParams:
    """Build hyper-parameters from a preset name and a nested mapping of overrides.

    Raises ``ValueError`` with a sentence naming the unknown key or bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    params = PRESETS[preset]
    overrides = dict(overrides or {})
    changes = {}
    for section in ("vae", "supermix", "detector", "training"):
        if section in overrides:
            values = overrides.pop(section)
            if not isinstance(values, Mapping):
                raise ValueError(f"section '{section}' must be a table of key = value")
            changes[section] = _override(getattr(params, section), section, values)
    if overrides:
        raise ValueError(
            f"unknown section(s) {', '.join(sorted(overrides))}; "
            "known: vae, supermix, detector, training"
        )
    result = replace(params, **changes)
    if result.training.intensity_normalisation not in ("wm-peak", "percentile"):
        raise ValueError(f"bad value for 'training.intensity_normalisation': "
                         f"{result.training.intensity_normalisation!r}; choose wm-peak or percentile")
    return result
