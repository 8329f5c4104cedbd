"""Self-pairs: NoChange training pairs made from single FLAIRs by simulating a rescan of each.

A lab's cross-sectional archive (one FLAIR per person) has no pair without change, yet a pair
without change is all the self-supervised detector needs: :func:`write_self_pairs` turns each
FLAIR into ``n`` pairs whose two members are the scan itself and a simulated rescan of it, or two
rescans (alternately), drawn by :func:`bids_lesionchange.simulate.rescan.simulate_rescan`: their
own grid, slice plane, pose, contrast, bias, noise and artefacts. The pairs are written as a
small BIDS tree (``sub-<label>/ses-selfpairNNa|b/anat/``) that the app then preprocesses like any
other pair, so the detector is trained on exactly the nuisance its preprocessing leaves.

Files are written once: a second call with the same arguments finds them and returns the same
pairs (resumable); a different seed writes other rescans.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from bids_lesionchange.atomic import atomic_write_json
from bids_lesionchange.discovery import SessionPair
from bids_lesionchange.errors import InputError

LOGGER = logging.getLogger("bids_lesionchange.simulate.selfpairs")
STEP = "self_pairs"


def self_pair_sessions(index: int) -> tuple[str, str]:
    """Session labels of the ``index``-th self-pair (1-based): ``selfpair01a``, ``selfpair01b``."""
    return f"selfpair{index:02d}a", f"selfpair{index:02d}b"


def _write(path: Path, data: np.ndarray, affine: np.ndarray, sidecar: dict) -> None:
    from bids_lesionchange.simulate.cohort import write_nifti

    path.parent.mkdir(parents=True, exist_ok=True)
    slice_axis = 2 if sidecar.get("acquisition") == "2D" else None
    write_nifti(path, np.asarray(data), affine, slice_axis=slice_axis)
    atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), sidecar)


def write_self_pairs(flairs: dict[str, list[tuple[str | None, Path]]], out_dir, n_per_subject: int,
                     seed: int = 0) -> list[SessionPair]:
    """Write ``n_per_subject`` self-pairs per subject under ``out_dir``; return them as SessionPairs.

    Parameters
    ----------
    flairs : {subject: [(session or None, FLAIR path), ...]}
        From :func:`bids_lesionchange.discovery.find_flairs`; self-pair ``k`` of a subject uses
        its ``k``-th FLAIR (cycling), so every session serves.
    out_dir : path
        A directory of the work directory (a BIDS-like tree is written in it).
    n_per_subject : int
        Pairs per subject; odd pairs are (original, rescan), even pairs (rescan, rescan).
    seed : int
        Same seed, same files.

    Raises
    ------
    InputError naming the FLAIR that cannot be rescanned (unreadable, empty, constant).
    """
    from bids_lesionchange.image.io import load_flair
    from bids_lesionchange.simulate.rescan import prepare_source, self_pair

    out_dir = Path(out_dir)
    pairs: list[SessionPair] = []
    for subject, sources in sorted(flairs.items()):
        prepared: dict[Path, object] = {}
        for k in range(1, n_per_subject + 1):
            session, path = sources[(k - 1) % len(sources)]
            ses_a, ses_b = self_pair_sessions(k)
            files = [out_dir / f"sub-{subject}" / f"ses-{s}" / "anat" / f"sub-{subject}_ses-{s}_FLAIR.nii.gz"
                     for s in (ses_a, ses_b)]
            if not all(f.is_file() and f.with_name(f.name.replace(".nii.gz", ".json")).is_file() for f in files):
                img = load_flair(path, step=STEP)
                if path not in prepared:
                    try:
                        prepared[path] = prepare_source(np.asanyarray(img.dataobj, dtype=np.float32), img.affine)
                    except ValueError as err:
                        raise InputError(path, STEP, f"cannot simulate a rescan of this FLAIR ({err}); "
                                         "check the image or leave this subject out of --nochange-label") from None
                rng = np.random.default_rng([seed, zlib.crc32(subject.encode()), k])
                mode = "original" if k % 2 else "both"
                members = self_pair(np.asanyarray(img.dataobj, dtype=np.float32), img.affine, rng, mode=mode,
                                    source=prepared[path])
                for file, (data, affine, info) in zip(files, members):
                    sidecar = {"SelfPairOf": str(path), "Session": session, "Seed": seed, "Pair": k,
                               "Simulated": info.get("acquisition") != "original", **info}
                    _write(file, data, affine, sidecar)
                LOGGER.info("self-pair %d of sub-%s (%s): %s", k, subject, path.name,
                            " / ".join(str(m[2].get("acquisition")) for m in members))
            pairs.append(SessionPair(subject, ses_a, ses_b, files[0], files[1]))
    return pairs
