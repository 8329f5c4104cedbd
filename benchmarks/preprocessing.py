"""Benchmark the preprocessing of one 1 mm skull-on pair: time and memory per step, accuracy.

Usage::

    python benchmarks/preprocessing.py --method threshold     # ~1-2 min on 2 cores
    python benchmarks/preprocessing.py --method hdbet         # HD-BET fast on CPU
    python benchmarks/preprocessing.py --real                 # the shared real FLAIR (none/threshold)

Each call adds its section to ``benchmarks/results/preprocessing.json`` and prints it. The pair
is a simulated Change subject (``bids_lesionchange-synth DIR --n-nochange 0 --n-change 1
--preset 1mm``, generated once into ``--data``) with a known head motion between sessions and a
true brain mask. Every method runs in a child process that calls the same functions as the
workflow's nodes, in the same order, one after the other (no Nipype overhead, no parallelism);
its peak RSS includes HD-BET's own child process.

Measures: wall time per step; peak resident memory; rotation (degrees) and translation (mm at
the brain's centroid) error of the baseline-to-common transform against the simulated motion;
Dice of the skull-strip mask against the true (intracranial) brain mask of the follow-up.
Targets (project issue 4): pair <= 60 s, <= 4 GB, rotation <= 0.5 deg, translation <= 0.5 mm,
Dice >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_results  # noqa: E402

LOGGER = logging.getLogger("benchmarks.preprocessing")
TARGETS = {"seconds_pair": 60, "peak_gb": 4, "rotation_deg": 0.5, "translation_mm": 0.5, "dice": 0.95}
SHARED_FLAIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ms-flair-patient26" / "FLAIR.nii.gz"


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def run_steps(baseline: Path, followup: Path, out: Path, method: str, nthreads: int) -> dict:
    """Run the workflow's steps in order; return the seconds per step and the peak RSS."""
    from bids_lesionchange.image import preprocess as pp
    from bids_lesionchange.image import reportlets

    out.mkdir(parents=True, exist_ok=True)
    seconds, cpu_seconds = {}, {}

    def cpu_now():
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def step(name, function, *args, **kwargs):
        start, start_cpu = time.perf_counter(), cpu_now()
        result = function(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 2)
        cpu_seconds[name] = round(cpu_now() - start_cpu, 2)
        return result

    step("check_inputs", pp.check_pair, baseline, followup, threads=min(nthreads, 2))
    step("common_grid", pp.followup_to_common, followup, out / "followup_common.nii.gz",
         out / "followup_xfm.txt", resolution=1.0, threads=nthreads)
    step("skullstrip", pp.skullstrip_followup, out / "followup_common.nii.gz",
         out / "skullstrip_mask.nii.gz", method=method, nthreads=nthreads, source_file=followup)
    step("n4_followup", pp.n4_correct_file, out / "followup_common.nii.gz",
         out / "skullstrip_mask.nii.gz", out / "followup_n4.nii.gz", nthreads=nthreads)
    step("coarse_reg", pp.coarse_register_file, out / "followup_common.nii.gz",
         out / "skullstrip_mask.nii.gz", baseline, out / "coarse_xfm.txt", nthreads=nthreads)
    step("baseline_mask", pp.mask_to_native_file, out / "skullstrip_mask.nii.gz", baseline,
         out / "coarse_xfm.txt", out / "baseline_native_mask.nii.gz")
    step("n4_baseline", pp.n4_correct_file, baseline, out / "baseline_native_mask.nii.gz",
         out / "baseline_n4.nii.gz", nthreads=nthreads)
    step("rigid_reg", pp.register_baseline_file, out / "followup_n4.nii.gz",
         out / "skullstrip_mask.nii.gz", out / "baseline_n4.nii.gz", out / "coarse_xfm.txt",
         out / "baseline_common.nii.gz", out / "baseline_xfm.txt", out / "brain_mask.nii.gz",
         out / "registration.json", source_file=baseline, nthreads=nthreads,
         out_before=out / "baseline_before.nii.gz")
    step("normalise", lambda: [
        pp.normalise_file(out / "baseline_common.nii.gz", out / "brain_mask.nii.gz",
                          out / "baseline_preproc.nii.gz"),
        pp.normalise_file(out / "followup_n4.nii.gz", out / "brain_mask.nii.gz",
                          out / "followup_preproc.nii.gz")])
    step("qc", pp.quality_file, out / "baseline_preproc.nii.gz", out / "followup_preproc.nii.gz",
         out / "brain_mask.nii.gz", out / "registration.json", out / "qc.json", skull_strip=method)
    step("reportlets", lambda: [
        reportlets.mask_report_file(out / "followup_n4.nii.gz", out / "brain_mask.nii.gz",
                                    out / "mask.svg"),
        reportlets.registration_report_file(out / "followup_n4.nii.gz", out / "baseline_before.nii.gz",
                                            out / "baseline_common.nii.gz",
                                            out / "brain_mask.nii.gz", out / "registration.svg")])
    total = round(sum(seconds.values()), 1)
    # With two Nipype processes the follow-up's N4 runs alongside the baseline's branch, and
    # the reportlets alongside the QC: the longest chain of steps.
    critical = (seconds["check_inputs"] + seconds["common_grid"] + seconds["skullstrip"]
                + max(seconds["n4_followup"],
                      seconds["coarse_reg"] + seconds["baseline_mask"] + seconds["n4_baseline"])
                + seconds["rigid_reg"] + seconds["normalise"] + max(seconds["qc"], seconds["reportlets"]))
    return {"seconds_per_step": seconds, "seconds_total": total,
            "seconds_critical_path_2_processes": round(critical, 1),
            "cpu_seconds_per_step": cpu_seconds,
            "cpu_seconds_total": round(sum(cpu_seconds.values()), 1),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "peak_rss_mb": round(_peak_rss_mb(), 0)}


def _worker(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    result = run_steps(Path(args.baseline), Path(args.followup), Path(args.out), args.worker,
                       args.nthreads)
    print(json.dumps(result))
    return 0


def _run_child(method: str, baseline: Path, followup: Path, out: Path, nthreads: int) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--baseline", str(baseline),
               "--followup", str(followup), "--out", str(out), "--nthreads", str(nthreads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(nthreads))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds_process"] = round(wall, 1)
    result["peak_rss_mb"] = max(result["peak_rss_mb"],
                                round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0))
    return result


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def accuracy(out: Path, true_xfm: np.ndarray | None, true_mask_file: Path | None,
             followup: Path) -> dict:
    """Return registration errors and the skull-strip Dice of a finished run."""
    import nibabel as nib

    from bids_lesionchange.image.register import rigid_error
    from bids_lesionchange.image.transforms import read_xfm, to_native

    mask_img = nib.load(str(out / "skullstrip_mask.nii.gz"))
    mask = np.asanyarray(mask_img.dataobj) > 0
    centre = mask_img.affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + mask_img.affine[:3, 3]
    result = {"qc": json.loads((out / "qc.json").read_text())}
    if true_xfm is not None:
        rotation, translation = rigid_error(read_xfm(out / "baseline_xfm.txt"), true_xfm, centre)
        result.update(rotation_error_deg=round(rotation, 3), translation_error_mm=round(translation, 3))
    if true_mask_file is not None:
        # The mask found on the common grid, carried onto the follow-up's native grid (the
        # follow-up's transform is the identity): compare where the truth lives.
        native = to_native(out / "skullstrip_mask.nii.gz", followup, np.eye(4), order=0)
        truth = np.asanyarray(nib.load(str(true_mask_file)).dataobj) > 0
        result["skullstrip_dice"] = round(_dice(np.asanyarray(native.dataobj) > 0, truth), 4)
    return result


def synthetic_pair(data_dir: Path) -> dict:
    """Generate (once) the 1 mm Change subject and return its files and truth."""
    if not (data_dir / "participants.tsv").is_file():
        LOGGER.warning("generating the 1 mm synthetic pair in %s", data_dir)
        subprocess.run(["bids_lesionchange-synth", str(data_dir), "--n-nochange", "0",
                        "--n-change", "1", "--preset", "1mm"], check=True,
                       env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    subject = sorted(p.name for p in data_dir.glob("sub-*") if p.is_dir())[0]
    truth = data_dir / "derivatives" / "truth" / subject
    xfm = truth / "anat" / f"{subject}_from-ses01_to-ses02_mode-image_xfm.txt"
    return {
        "subject": subject,
        "baseline": data_dir / subject / "ses-01" / "anat" / f"{subject}_ses-01_FLAIR.nii.gz",
        "followup": data_dir / subject / "ses-02" / "anat" / f"{subject}_ses-02_FLAIR.nii.gz",
        "true_xfm": np.loadtxt(xfm),
        "true_mask": truth / "ses-02" / "anat" / f"{subject}_ses-02_desc-brain_mask.nii.gz",
    }


def real_pair(work: Path) -> dict:
    """Return the shared real FLAIR as follow-up and a copy moved by a known motion as baseline.

    The baseline is the same voxels with a new affine (no interpolation): its world is the
    follow-up's world moved by ``motion``, so the true baseline-to-common transform is
    ``inv(motion)``.
    """
    import nibabel as nib

    from bids_lesionchange.simulate.acquisition import rigid_matrix, rotation_matrix

    img = nib.load(str(SHARED_FLAIR))
    motion = rigid_matrix(rotation_matrix((4.0, -3.0, 5.0)), (3.0, -2.0, 4.0))
    work.mkdir(parents=True, exist_ok=True)
    baseline = work / "real_baseline.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), motion @ img.affine), str(baseline))
    return {"baseline": baseline, "followup": SHARED_FLAIR, "true_xfm": np.linalg.inv(motion)}


def _update_results(section: str, value: dict) -> dict:
    return update_results("preprocessing", {section: value, "targets": TARGETS})


def main(argv=None) -> int:
    """Run the benchmark sections asked for on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", nargs="*", default=[], choices=["threshold", "hdbet", "none"])
    parser.add_argument("--real", action="store_true", help="also run the shared real FLAIR")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench_synth_1mm")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_preproc")
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--followup", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.method:
        pair = synthetic_pair(args.data)
        for method in args.method:
            out = args.work / f"synthetic_{method}"
            result = _run_child(method, pair["baseline"], pair["followup"], out, args.nthreads)
            result.update(accuracy(out, pair["true_xfm"], pair["true_mask"], pair["followup"]))
            result["data"] = f"bids_lesionchange-synth --preset 1mm, {pair['subject']} (Change)"
            _update_results(f"synthetic_1mm_{method}", result)
            print(json.dumps({method: result}, indent=2))
    if args.real:
        if not SHARED_FLAIR.is_file():
            LOGGER.warning("the shared real FLAIR is absent; skipping --real")
            return 0
        import nibabel as nib

        from bids_lesionchange.image.transforms import to_native

        pair = real_pair(args.work)
        for method in ("none", "threshold"):
            out = args.work / f"real_{method}"
            result = _run_child(method, pair["baseline"], pair["followup"], out, args.nthreads)
            result.update(accuracy(out, pair["true_xfm"], None, pair["followup"]))
            nonzero = np.asanyarray(nib.load(str(SHARED_FLAIR)).dataobj) != 0
            found = np.asanyarray(to_native(out / "skullstrip_mask.nii.gz", SHARED_FLAIR,
                                            np.eye(4), order=0).dataobj) > 0
            result["mask_dice_vs_nonzero"] = round(_dice(found, nonzero), 4)
            result["data"] = "ms-flair-patient26 FLAIR (brain-extracted, MNI 1 mm) and a copy " \
                             "with a known motion (affine only)"
            _update_results(f"real_flair_{method}", result)
            print(json.dumps({f"real_{method}": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
