"""Out-of-domain guard: is a change probability map plausible for a pair of MS scans?

A detector that does not fit a user's scans (another scanner, another contrast) puts its
probability above kappa over a large part of the brain (measured on a real pair: 97 % of the
brain, 96 "changes"). New and enlarging MS lesions between two sessions cover a small fraction
of the brain, so a pair where more than ``MAX_PLAUSIBLE_FRACTION`` of the brain is above kappa is
flagged as out of domain. The outputs are still written: the flag is a warning, not a failure.

numpy is imported inside the function so that the command-line parser can read
``MAX_PLAUSIBLE_FRACTION`` and stay free of third-party imports.
"""

from __future__ import annotations

import math
from typing import Any

#: Largest plausible fraction of the brain with p > kappa (2 %); above it the pair is flagged.
#: To be calibrated on NoChange pairs.
MAX_PLAUSIBLE_FRACTION = 0.02

#: The keys of :func:`change_plausibility`'s result, in the order they are written.
PLAUSIBILITY_FIELDS = ("fraction_above_threshold", "n_changes", "max_plausible_fraction",
                       "out_of_domain", "message")

TRAIN_COMMAND = "bids_lesionchange BIDS_DIR OUT_DIR group --mode train"


def change_plausibility(probability, brain_mask, threshold: float = 0.1, n_changes: int = 0, *,
                        max_plausible_fraction: float = MAX_PLAUSIBLE_FRACTION) -> dict[str, Any]:
    """Measure how much of the brain the detector calls change and flag an implausible map.

    ``fraction_above_threshold = |{v in brain : p(v) > kappa}| / |brain|`` (strictly greater, the
    paper's rule; NaN counts as no change). Lower is more plausible: a pair is ``out_of_domain``
    when the fraction is strictly greater than ``max_plausible_fraction``.

    Parameters
    ----------
    probability : ndarray
        Change probability map.
    brain_mask : ndarray
        Brain mask of the same shape; voxels ``> 0`` are brain.
    threshold : float
        kappa (default 0.1).
    n_changes : int
        Number of changes (connected components) found in the map, reported as is.
    max_plausible_fraction : float
        The limit, in (0, 1] (default :data:`MAX_PLAUSIBLE_FRACTION`).

    Returns
    -------
    dict
        ``fraction_above_threshold`` (float, or None for an empty brain mask: nothing to judge,
        and the pair is then not flagged), ``n_changes``, ``max_plausible_fraction``,
        ``out_of_domain`` (bool) and ``message`` (one sentence when flagged, else ``""``).
    """
    import numpy as np

    if not 0.0 < max_plausible_fraction <= 1.0:
        raise ValueError(f"max_plausible_fraction must lie in (0, 1], got {max_plausible_fraction!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
    if n_changes < 0:
        raise ValueError(f"n_changes must be >= 0, got {n_changes}")
    probability = np.asarray(probability, dtype=np.float32)
    brain = np.asarray(brain_mask) > 0
    if brain.shape != probability.shape:
        raise ValueError(f"the brain mask shape {brain.shape} differs from the probability map's "
                         f"{probability.shape}")
    n_brain = int(brain.sum())
    fraction = None
    if n_brain:
        fraction = int(np.count_nonzero(probability[brain] > threshold)) / n_brain
    flagged = fraction is not None and fraction > max_plausible_fraction
    return {
        "fraction_above_threshold": fraction,
        "n_changes": int(n_changes),
        "max_plausible_fraction": float(max_plausible_fraction),
        "out_of_domain": bool(flagged),
        "message": out_of_domain_message(fraction, threshold, n_changes) if flagged else "",
    }


def out_of_domain_message(fraction: float, threshold: float, n_changes: int) -> str:
    """Return the one-sentence warning of a flagged pair (what was measured and what to do)."""
    changes = f"{int(n_changes)} change{'' if n_changes == 1 else 's'}"
    return (f"the model does not fit these scans ({100 * fraction:.1f} % of the brain above "
            f"kappa = {threshold:g}, {changes}): train one on your own NoChange subjects with "
            f"`{TRAIN_COMMAND}` (add `--self-pairs 4` to use single-session scans; see docs/method.md)")
