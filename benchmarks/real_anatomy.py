"""Real MS anatomy and real lesions as new lesions: the model against subtraction.

Usage::

    python benchmarks/real_anatomy.py          # needs ../shared/data/ms-flair-patient26 (~6 min)

Writes ``benchmarks/results/real_anatomy.{json,md}`` and prints the table.

The synthetic cohort of ``accuracy.py`` has simulated anatomy and simulated lesions. This
benchmark keeps both real: the FLAIR of one MS patient (Lesjak et al. 2018, CC-BY 4.0, patient
26; 1 mm, skull-stripped, in MNI space) with its consensus lesion mask.

1. **Baseline phantom**: the FLAIR with a random half of its lesions (components of 20 to
   3000 voxels) removed, their voxels filled by diffusion from the surrounding tissue.
   **Follow-up phantom**: the FLAIR as it is. The removed lesions are therefore *new* at
   follow-up, with the shape, place and intensity of real lesions; every other lesion and the
   whole brain are unchanged.
2. Each phantom is "scanned" with the simulator's acquisition model
   (:mod:`bids_lesionchange.simulate.acquisition`): a head pose (up to 5 deg / 5 mm between
   sessions), partial volume on the session grid, a different bias field (up to exp(+-0.2)),
   gain and contrast, Rician noise. Pairs alternate between a 3D 1 mm follow-up and a 2D
   0.9 x 0.9 x 3 mm follow-up; the baseline is always 3D 1 mm.
3. ``bids_lesionchange ... participant --mode infer --reference-dir ...`` with the shipped model
   (HD-BET, defaults), ``group --mode evaluate``; then, on the app's own preprocessed images,
   the model under the paper's any-direction rule and the subtraction baseline d > t, with the
   same components step and evaluation (as ``accuracy.py``).

Only one patient: the pairs share the anatomy and differ in which lesions are new, the motion
and the acquisition. It says how the detector copes with real FLAIR texture, real lesions and
real anatomy under simulated rescans; it is not a substitute for real longitudinal data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, app_command, checked_model, command_line, fmt, machine, markdown_table,  # noqa: E402
                     run_checked, setup_logging, write_results)

LOGGER = logging.getLogger("benchmarks.real_anatomy")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ms-flair-patient26"
SHOWN = ("LTPR", "LFPR", "PPV", "lesion_F1", "dice")


def inpaint(image: np.ndarray, holes: np.ndarray, known: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Fill ``holes`` by diffusion from the ``known`` voxels around them: a Laplace fill."""
    from scipy import ndimage

    out = image.astype(np.float32).copy()
    known = known & ~holes
    region = ndimage.binary_dilation(holes, iterations=2)
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in ndimage.find_objects(region.astype(int))[0])
    sub, sub_holes, sub_known = out[box], holes[box], known[box]
    start = np.median(sub[sub_known & ndimage.binary_dilation(sub_holes, iterations=2)])
    sub[sub_holes] = start
    kernel = np.ones((3, 3, 3), np.float32)
    for _ in range(iterations):
        weights = ndimage.convolve((sub_known | sub_holes).astype(np.float32), kernel, mode="constant")
        total = ndimage.convolve(np.where(sub_known | sub_holes, sub, 0.0), kernel, mode="constant")
        sub[sub_holes] = (total / np.maximum(weights, 1.0))[sub_holes]
    out[box] = sub
    return out


def make_pair(flair: np.ndarray, lesions: np.ndarray, affine: np.ndarray, seed: int, thick: bool) -> dict:
    """Simulate one baseline/follow-up acquisition of the patient with a random half of lesions new."""
    import cc3d

    from bids_lesionchange.simulate.acquisition import SessionProtocol, acquire, random_motion, resample_to_session

    rng = np.random.default_rng(seed)
    brain = flair > 0
    labels = cc3d.connected_components(lesions.astype(np.uint8), connectivity=26)
    sizes = np.bincount(labels.ravel())
    eligible = [i for i in range(1, sizes.size) if 20 <= sizes[i] <= 3000]
    chosen = sorted(rng.choice(eligible, size=max(1, len(eligible) // 2), replace=False).tolist())
    new = np.isin(labels, chosen)
    white = float(np.median(flair[brain & ~lesions]))
    follow_phantom = flair / white
    base_phantom = flair.copy()
    for lesion in chosen:
        base_phantom = inpaint(base_phantom, labels == lesion, brain & ~lesions)
    base_phantom = base_phantom / white

    def protocol(zooms, shape, acquisition, pose, key):
        return SessionProtocol(zooms=zooms, shape=shape, acquisition=acquisition, head_pose=pose,
                               gain=float(rng.uniform(0.8, 1.2)), gamma=float(rng.uniform(0.9, 1.1)),
                               noise_sigma=float(rng.uniform(0.015, 0.04)), bias_seed=seed * 10 + key,
                               bias_amplitude=float(rng.uniform(0.05, 0.2)))

    from bids_lesionchange.simulate.acquisition import rigid_matrix

    centre = affine[:3, :3] @ np.argwhere(brain).mean(axis=0) + affine[:3, 3]
    pose_1 = random_motion(rng, 5.0, 5.0) @ rigid_matrix(np.eye(3), -centre)  # brain centred in the FOV
    pose_2 = random_motion(rng, 5.0, 5.0) @ pose_1
    base = protocol((1.0, 1.0, 1.0), (192, 228, 192), "3D", pose_1, 1)
    follow = (protocol((0.9, 0.9, 3.0), (214, 254, 64), "2D", pose_2, 2) if thick
              else protocol((1.0, 1.0, 1.0), (192, 228, 192), "3D", pose_2, 2))
    (base_clean,) = resample_to_session([base_phantom], affine, base)
    follow_clean, truth = resample_to_session([follow_phantom, new.astype(np.float32)], affine, follow)
    return {"baseline": (acquire(base_clean, base, seed * 10 + 3)[0], base),
            "followup": (acquire(follow_clean, follow, seed * 10 + 4)[0], follow),
            "truth": truth >= 0.5, "n_new": len(chosen), "n_lesions": len(eligible),
            "new_voxels": int(new.sum())}


def write_dataset(root: Path, seeds: list[int]) -> Path:
    """Write the BIDS dataset (one subject per seed; odd subjects get a thick-slice follow-up)."""
    import nibabel as nib

    from bids_lesionchange.simulate.cohort import write_nifti

    bids = root / "bids"
    if (bids / "dataset_description.json").is_file():
        LOGGER.info("reusing %s", bids)
        return bids
    img = nib.load(str(DATA / "FLAIR.nii.gz"))
    flair = np.asarray(img.dataobj, dtype=np.float32)
    lesions = np.asarray(nib.load(str(DATA / "lesion_mask.nii.gz")).dataobj) > 0
    rows = ["participant_id\tgroup\tfollowup_acquisition\tnew_lesions\tlesions_eligible"]
    for index, seed in enumerate(seeds, start=1):
        sub = f"{index:02d}"
        thick = index % 2 == 0
        LOGGER.info("sub-%s: seed %d, %s follow-up", sub, seed, "thick-slice" if thick else "3D")
        pair = make_pair(flair, lesions, img.affine, seed, thick)
        for ses, key in (("01", "baseline"), ("02", "followup")):
            data, protocol = pair[key]
            anat = bids / f"sub-{sub}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            write_nifti(anat / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz", np.round(data).astype(np.int16), protocol.affine,
                        slice_axis=2 if protocol.acquisition == "2D" else None)
            (anat / f"sub-{sub}_ses-{ses}_FLAIR.json").write_text(json.dumps(
                {"MRAcquisitionType": protocol.acquisition, "SliceThickness": protocol.zooms[2]}, indent=2) + "\n")
        truth = bids / "derivatives" / "truth" / f"sub-{sub}" / "ses-02" / "anat"
        truth.mkdir(parents=True, exist_ok=True)
        write_nifti(truth / f"sub-{sub}_ses-02_desc-change_mask.nii.gz", pair["truth"].astype(np.uint8),
                    pair["followup"][1].affine)
        rows.append(f"sub-{sub}\tChange\t{'2D' if thick else '3D'}\t{pair['n_new']}\t{pair['n_lesions']}")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    (bids / "dataset_description.json").write_text(json.dumps({
        "Name": "bids_lesionchange real-anatomy benchmark (derived from Lesjak et al. 2018, patient 26)",
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC-BY-4.0",
        "ReferencesAndLinks": ["https://doi.org/10.1007/s12021-017-9348-7"]}, indent=2) + "\n")
    (bids / "README").write_text("Simulated rescans of one real MS FLAIR; see benchmarks/real_anatomy.py.\n")
    truth_root = bids / "derivatives" / "truth"
    (truth_root / "dataset_description.json").write_text(json.dumps({
        "Name": "truth", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "benchmarks/real_anatomy.py"}]}, indent=2) + "\n")
    return bids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids_lesionchange_bench/real_anatomy"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--omp-nthreads", type=int, default=2)
    opts = parser.parse_args()
    setup_logging()
    if not (DATA / "FLAIR.nii.gz").is_file():
        parser.error(f"{DATA} is missing: this benchmark needs the shared real FLAIR (see its README)")
    model = checked_model(parser, opts.model)
    from accuracy import _float_row, _summary, model_any_direction, subtraction_baseline

    from bids_lesionchange.analysis.tables import read_table_tsv

    root = opts.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    bids = write_dataset(root, opts.seeds)
    subjects = [f"{i:02d}" for i in range(1, len(opts.seeds) + 1)]
    out = root / "out"
    seconds = run_checked(app_command(bids, out, "participant", "--mode", "infer", "--model", model,
                                      "--reference-dir", bids / "derivatives" / "truth", "-w", root / "work",
                                      "--nprocs", opts.nprocs, "--omp-nthreads", opts.omp_nthreads,
                                      "--skip-bids-validation"), log_file=root / "participant.log")
    run_checked(app_command(bids, out, "group", "--mode", "evaluate", "--no-reports"), log_file=root / "group.log")
    rows = [_float_row(r) for r in read_table_tsv(out / "group_desc-evaluation_metrics.tsv")]
    model_pairs = [r for r in rows if r["pair"] not in ("mean", "pooled")]
    methods = [{"method": "model (p > 0.1, default: follow-up brighter)", "mean": _summary(next(
                    r for r in rows if r["pair"] == "mean")),
                "pooled": _summary(next(r for r in rows if r["pair"] == "pooled"), True),
                "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in model_pairs]}]
    entry = model_any_direction(bids, out, subjects, [20], root / "model_any")[(0.1, 20)]
    methods.append({"method": "model (p > 0.1, any direction: the paper's rule)", "mean": _summary(entry["mean"]),
                    "pooled": _summary(entry["pooled"], True),
                    "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in entry["pairs"]]})
    baseline = subtraction_baseline(bids, out, subjects, opts.thresholds, [20], root / "subtraction")
    for t in opts.thresholds:
        entry = baseline[(t, 20)]
        methods.append({"method": f"subtraction d > {t}", "mean": _summary(entry["mean"]),
                        "pooled": _summary(entry["pooled"], True),
                        "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in entry["pairs"]]})
    headers = ["method", "LTPR", "LFPR", "PPV", "lesion F1", "Dice", "pooled: ref lesions", "pred blobs",
               "LTPR", "PPV", "lesion F1"]
    table = [[m["method"], *[m["mean"][k] for k in SHOWN], m["pooled"]["n_ref"], m["pooled"]["n_pred"],
              m["pooled"]["LTPR"], m["pooled"]["PPV"], m["pooled"]["lesion_F1"]] for m in methods]
    per_pair_headers = ["method", *[f"sub-{s} ({'2D' if int(s) % 2 == 0 else '3D'}) F1 / LFP" for s in subjects]]
    per_pair = [[m["method"], *[f"{fmt(p['lesion_F1'])} / {p['LFP']}" for p in m["pairs"]]] for m in methods]
    participants = (bids / "participants.tsv").read_text()
    command = command_line()
    markdown = (
        "# Real anatomy, real lesions as new lesions (one MS patient, simulated rescans)\n\n"
        f"{len(subjects)} pairs from the FLAIR of Lesjak et al. 2018 patient 26 (CC-BY 4.0): at baseline a "
        "random half of the lesions of 20-3000 voxels is removed (diffusion fill), so they are new at "
        "follow-up; rescans with head motion (<= 5 deg / 5 mm), bias, gain, contrast and Rician noise; "
        "even-numbered subjects have a 2D 0.9 x 0.9 x 3 mm follow-up. App defaults (HD-BET, kappa 0.1, "
        "blobs >= 20 voxels, IoU >= 0.01), shipped model.\n\n"
        f"Command: `{command}`\n\n"
        f"## Mean over pairs, and pooled\n\n{markdown_table(headers, table)}\n"
        f"## Per pair (lesion F1 / false-positive blobs)\n\n{markdown_table(per_pair_headers, per_pair)}\n"
        "Subtraction thresholds are all shown; picking the best one needs the truth.\n"
    )
    data = {"command": command, "machine": machine(), "seeds": opts.seeds, "participants_tsv": participants,
            "model": str(model), "seconds_participant_run": round(seconds, 1), "results": methods}
    write_results("real_anatomy", data, markdown)


if __name__ == "__main__":
    main()
