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


# ----------------------------------------------------------------- reference masks (evaluation)
#: Largest plausible share of the brain mask covered by a reference change mask (10 %). New and
#: enlarging lesions between two sessions are usually well under 1 % of the brain; even the total
#: lesion load of severe MS (about 100 ml in a 1100 ml brain) stays under 10 %. Above it the mask
#: is not a change mask of this pair (a brain or tissue mask, a wrong threshold, a wrong file).
MAX_REFERENCE_BRAIN_FRACTION = 0.10
#: Largest plausible share of a reference mask lying outside the brain mask (50 %), when that part
#: is larger than :data:`MIN_REFERENCE_OUTSIDE_ML` (a small juxtacortical lesion may lie half outside
#: a tight brain mask). Above it the mask is on another grid, misaligned or of another subject.
MAX_REFERENCE_OUTSIDE_FRACTION = 0.5
MIN_REFERENCE_OUTSIDE_ML = 1.0


def reference_plausibility(reference, brain_mask, voxel_volume_mm3: float) -> dict[str, Any]:
    """Measure how a reference change mask lies in the brain, and whether that is plausible.

    ``fraction_of_brain = |R and B| / |B|`` (lower is more plausible; implausible above
    :data:`MAX_REFERENCE_BRAIN_FRACTION`); ``fraction_outside_brain = |R - B| / |R|`` with its
    volume ``outside_brain_ml`` (implausible above :data:`MAX_REFERENCE_OUTSIDE_FRACTION` when the
    volume exceeds :data:`MIN_REFERENCE_OUTSIDE_ML`). An empty reference (no change) is plausible.

    Parameters
    ----------
    reference, brain_mask : ndarray
        Masks on one grid (non-zero = inside).
    voxel_volume_mm3 : float
        Volume of one voxel.

    Returns
    -------
    dict
        ``fraction_of_brain``, ``fraction_outside_brain``, ``outside_brain_ml``, ``plausible``.
    """
    import numpy as np

    ref = np.asarray(reference) != 0
    brain = np.asarray(brain_mask) != 0
    n_ref, n_brain = int(ref.sum()), int(brain.sum())
    outside = int(np.count_nonzero(ref & ~brain))
    of_brain = float(np.count_nonzero(ref & brain) / n_brain) if n_brain else math.nan
    outside_fraction = outside / n_ref if n_ref else 0.0
    outside_ml = outside * float(voxel_volume_mm3) / 1000.0
    plausible = not (of_brain > MAX_REFERENCE_BRAIN_FRACTION
                     or (outside_fraction > MAX_REFERENCE_OUTSIDE_FRACTION
                         and outside_ml > MIN_REFERENCE_OUTSIDE_ML))
    return {"fraction_of_brain": round(of_brain, 4), "fraction_outside_brain": round(outside_fraction, 4),
            "outside_brain_ml": round(outside_ml, 3), "plausible": bool(plausible)}


def reference_flag(measures: dict[str, Any], reference_file) -> str | None:
    """One sentence naming ``reference_file`` when :func:`reference_plausibility` found it implausible."""
    if measures["plausible"]:
        return None
    reasons = []
    if measures["fraction_of_brain"] > MAX_REFERENCE_BRAIN_FRACTION:
        reasons.append(f"it covers {measures['fraction_of_brain']:.0%} of the brain (new and enlarging lesions "
                       f"cover well under {MAX_REFERENCE_BRAIN_FRACTION:.0%})")
    if measures["fraction_outside_brain"] > MAX_REFERENCE_OUTSIDE_FRACTION:
        reasons.append(f"{measures['fraction_outside_brain']:.0%} of it ({measures['outside_brain_ml']:.1f} ml) "
                       f"lies outside the brain mask (limit {MAX_REFERENCE_OUTSIDE_FRACTION:.0%})")
    return (f"the reference mask {reference_file} is implausible for a change mask: "
            f"{' and '.join(reasons)}; the metrics of this pair are not meaningful; check that it is this "
            "pair's change mask (not a brain or lesion-load mask) on the follow-up's grid")
