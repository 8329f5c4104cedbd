"""Shared plumbing of the benchmark scripts: run the app as a user would, watch its memory,
read the Nipype node times, find derivatives, write JSON + markdown results.

Not part of the package (benchmarks are not tests, STYLE.md rule 12); stdlib + numpy, the
package's atomic writers for the results, and Nipype only to read node result files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
REPO = BENCHMARKS.parent
DEFAULT_MODEL = REPO / "bids_lesionchange" / "data" / "default_model"
LOGGER = logging.getLogger("benchmarks")

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_logging() -> None:
    """Log to stderr with timestamps (the scripts print their tables on stdout)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", datefmt="%H:%M:%S")


def fp32_flop_per_cycle(flags: set[str], vendor: str = "", family: int = -1, model: int = -1) -> int:
    """FP32 FLOP per cycle and core of a CPU's FMA units (2 FMA per cycle, x 2 FLOP, x SIMD lanes).

    AVX-512: 64 (two 512-bit FMA units), except AMD Zen 4 (family 25 with AVX-512), which runs
    AVX-512 on its two 256-bit FMA pipes: 32. AVX2 + FMA: 32, except AMD Zen 1 (family 23, models
    below 0x30: two 128-bit FMA pipes): 16. Otherwise SSE: 16. Intel parts with a single 512-bit
    FMA unit (some Xeon Bronze/Silver) cannot be told apart by their flags and are counted at 64:
    their peak is overstated, so their fraction of it is understated, never flattered.
    """
    amd = vendor == "AuthenticAMD"
    if "avx512f" in flags:
        return 32 if amd and family == 25 else 64
    if {"avx2", "fma"} <= flags:
        return 16 if amd and family == 23 and 0 <= model < 0x30 else 32
    return 16


def cpu_description(cpuinfo: str | None = None, cores: int | None = None, environ=None) -> dict:
    """The CPU a benchmark ran on: model, vector extensions, clock and its FP32 peak.

    Peak = cores x clock x FP32 FLOP per cycle of the FMA units (:func:`fp32_flop_per_cycle`); the
    clock is the nominal one of the model name, else /proc/cpuinfo's MHz. ``cpuinfo`` and ``cores``
    default to this machine's. Where ``ONEDNN_MAX_CPU_ISA`` (``environ``, default the process's)
    caps oneDNN below AVX-512 (``onednn_max_cpu_isa``), the peak is that of the AVX2 units the
    convolutions may use: half the nominal one on a CPU with two 512-bit FMA units.
    """
    import re

    from bids_lesionchange.cpu import VECTOR_EXTENSIONS, cpu_flags, onednn_allows, onednn_isa_cap

    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    lines = cpuinfo.splitlines()

    def field(name: str, default: str = "") -> str:
        return next((l.split(":", 1)[1].strip() for l in lines if l.split(":", 1)[0].strip() == name), default)

    def integer(name: str) -> int:
        value = field(name)
        return int(value) if value.isdigit() else -1

    model = field("model name", "unknown")
    flags = cpu_flags(cpuinfo)
    usable = flags if onednn_allows("AVX512_CORE", environ) else {f for f in flags if not f.startswith("avx512")}
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", model)
    mhz = [float(l.split(":", 1)[1]) for l in lines if l.startswith("cpu MHz")]
    ghz = float(nominal.group(1)) if nominal else (max(mhz) / 1000.0 if mhz else float("nan"))
    flop_per_cycle = fp32_flop_per_cycle(usable, field("vendor_id"), integer("cpu family"), integer("model"))
    cores = cores or os.cpu_count() or 1
    return {"model": model, "vendor": field("vendor_id", "unknown"), "family": integer("cpu family"),
            "model_number": integer("model"), "cores": cores, "clock_ghz": round(ghz, 3),
            "extensions": sorted(flags & VECTOR_EXTENSIONS),
            "onednn_max_cpu_isa": onednn_isa_cap(environ),
            "fp32_flop_per_cycle": flop_per_cycle, "fp32_peak_gflops": round(cores * ghz * flop_per_cycle, 1)}


def machine() -> dict:
    """Describe the machine, its CPU and its load (the benchmark machine is shared)."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu": cpu_description(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def machine_pace(n: int = 2048, loop: int = 2_000_000, megabytes: int = 256) -> dict:
    """How fast this machine runs right now, by three small probes (a few seconds in all).

    ``sgemm_gflops``: an ``n`` x ``n`` float32 matrix product with NumPy's BLAS on all cores (best of
    3), and its fraction of the nominal FP32 peak; ``python_mloops_per_s``: a plain Python loop
    (one core, the interpreter); ``fresh_memory_gb_per_s``: ``megabytes`` of new memory allocated and
    written (page faults included). Two VMs with the same CPU model differed 2-4x in every step of
    the app (stop 38); these say whether it is the machine, so that times from two machines are
    compared through them, not as they are.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    _ = a @ b  # BLAS threads start

    def best(function, repeats=3):
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            function()
            times.append(time.perf_counter() - began)
        return min(times)

    def python_loop():
        total = 0
        for i in range(loop):
            total += i & 7
        return total

    gemm_s = best(lambda: a @ b)
    loop_s = best(python_loop)
    fresh_s = best(lambda: np.ones(megabytes * 2 ** 20 // 8))
    peak = cpu_description()["fp32_peak_gflops"]
    gflops = 2.0 * n ** 3 / gemm_s / 1e9
    return {"sgemm_n": n, "sgemm_gflops": round(gflops, 1),
            "sgemm_fraction_of_peak": round(gflops / peak, 3) if math.isfinite(peak) and peak > 0 else None,
            "python_mloops_per_s": round(loop / loop_s / 1e6, 2),
            "fresh_memory_gb_per_s": round(megabytes / 1024 / fresh_s, 2)}


def clock_note(sgemm_fractions, cpu: dict | None = None) -> str:
    """A sentence for a results file whose matrix-product probe ran above the computed FP32 peak, else "".

    The peak takes the clock from the model name or /proc/cpuinfo's MHz; a VM's cores can run above
    that clock (an Intel Xeon reporting 2.6 GHz gave a NumPy sgemm at 1.04-1.09 of the peak so
    computed, stop 46), and then every "fraction of peak" in the file overstates the share of what
    the CPU could do. The probe's own rate is the better yardstick there.
    """
    fractions = [float(f) for f in sgemm_fractions if f is not None and math.isfinite(float(f))]
    if not fractions or max(fractions) <= 1.0:
        return ""
    clock = (cpu or {}).get("clock_ghz")
    reported = f" ({clock:g} GHz)" if isinstance(clock, (int, float)) and math.isfinite(clock) else ""
    return (f"The matrix-product probe ran at up to {max(fractions):.2f} x the computed FP32 peak: this CPU's "
            f"cores ran above the clock it reports{reported}, so every fraction of peak in this file overstates "
            "the share of what the CPU could do; divide by the probe's fraction for a fairer one.")


def command_line() -> str:
    """The command that ran this script, as a user types it."""
    return " ".join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


# ------------------------------------------------------------------------------ running the app
def checked_model(parser, path: Path) -> Path:
    """Return the resolved model directory, or stop with a parser error when it holds no model."""
    from bids_lesionchange.model.io import MODEL_SPEC

    model = Path(path).resolve()
    if not (model / MODEL_SPEC).is_file():
        parser.error(f"no model in {model} ({MODEL_SPEC} missing); train one or pass --model")
    return model


def app_command(*args) -> list[str]:
    """``bids_lesionchange ARGS`` in the current interpreter."""
    return [sys.executable, "-m", "bids_lesionchange.cli.run", *map(str, args)]


def synth_command(*args) -> list[str]:
    """``bids_lesionchange-synth ARGS`` in the current interpreter."""
    return [sys.executable, "-m", "bids_lesionchange.cli.synth", *map(str, args)]


def _process_table() -> dict[int, tuple[int, int]]:
    """Map pid -> (parent pid, resident bytes) for every readable process in /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            fields = stat[stat.rfind(")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[21]) * page)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _tree_pids(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """``root`` and its descendants that are in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def proportional_bytes(pid: int) -> int | None:
    """The proportional set size (PSS) of one process, in bytes, or None where the kernel does not
    report it (no ``/proc/PID/smaps_rollup``: Linux < 4.14, or the process has gone).

    PSS counts a page shared by N processes as 1/N of it in each, so the PSS of a process tree sums
    to the memory the tree holds, with a page that forked workers share counted once. Summed RSS
    counts such a page once per process that maps it.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def pss_supported() -> bool:
    """Whether this kernel reports the proportional set size (``/proc/PID/smaps_rollup``)."""
    return proportional_bytes(os.getpid()) is not None


def tree_memory(root: int, *, pss: bool = True) -> dict:
    """Memory of ``root`` and its descendants now: ``rss`` (summed resident bytes), ``largest``
    (largest single process's RSS) and ``pss`` (summed proportional set size: the memory the tree
    holds, shared pages counted once; a process that exits between the two reads counts 0; None
    with ``pss=False``, for a kernel that does not report it, see :func:`pss_supported`)."""
    table = _process_table()
    pids = _tree_pids(root, table)
    sizes = [table[pid][1] for pid in pids]
    shares = sum(proportional_bytes(pid) or 0 for pid in pids) if pss else None
    return {"rss": sum(sizes), "largest": max(sizes, default=0), "pss": shares}


def run_monitored(cmd: Sequence[str], *, log_file: Path, interval: float = 0.2) -> dict:
    """Run ``cmd``, polling the memory of its process tree (:func:`tree_memory`); return wall time and memory.

    Returns
    -------
    dict with ``returncode``, ``wall_seconds``, ``peak_tree_rss_gb`` (largest simultaneous sum of
    RSS over the process tree: a page that forked processes share counts once per process),
    ``peak_tree_pss_gb`` (largest simultaneous sum of PSS: what the tree holds, each page once;
    None where the kernel does not report PSS), ``max_single_process_rss_gb`` (the largest
    single process's RSS, HD-BET's included), ``rss_timeline`` and ``pss_timeline``
    [(seconds, GB), ...].
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    timeline, pss_timeline = [], []
    peak = single = peak_pss = 0
    pss_known = pss_supported()
    started_at = time.time()
    began = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            memory = tree_memory(proc.pid, pss=pss_known)
            peak, single = max(peak, memory["rss"]), max(single, memory["largest"])
            now = round(time.perf_counter() - began, 2)
            timeline.append((now, round(memory["rss"] / 1e9, 3)))
            if pss_known:
                peak_pss = max(peak_pss, memory["pss"])
                pss_timeline.append((now, round(memory["pss"] / 1e9, 3)))
            time.sleep(interval)
    wall = time.perf_counter() - began
    return {"returncode": proc.returncode, "wall_seconds": round(wall, 1), "started_at": started_at,
            "peak_tree_rss_gb": round(peak / 1e9, 2),
            "peak_tree_pss_gb": round(peak_pss / 1e9, 2) if pss_known else None,
            "max_single_process_rss_gb": round(single / 1e9, 2),
            "rss_timeline": timeline, "pss_timeline": pss_timeline}


def run_checked(cmd: Sequence[str], *, log_file: Path) -> float:
    """Run ``cmd`` with its output in ``log_file``; raise with the log's tail if it fails; return seconds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with open(log_file, "w") as log:
        code = subprocess.run(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log_file.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {code}; log {log_file}:\n{tail}")
    return time.perf_counter() - began


def ensure_synth_cohort(out: Path, *, n_nochange: int, n_change: int, seed: int, preset: str,
                        thick_slice: float = 0.0) -> Path:
    """Write a synthetic cohort with ``bids_lesionchange-synth`` unless ``out`` already holds it.

    The generator's arguments are recorded beside the cohort (``OUT-synth.json``); an existing
    cohort made with other arguments is an error (name another ``--root``), never silently reused.
    """
    args = [out, "--n-nochange", n_nochange, "--n-change", n_change, "--seed", seed, "--preset", preset]
    if thick_slice:
        args += ["--thick-slice", thick_slice]
    recorded = out.parent / f"{out.name}-synth.json"
    wanted = [str(a) for a in args[1:]]
    if (out / "dataset_description.json").is_file():
        made_with = json.loads(recorded.read_text()) if recorded.is_file() else None
        if made_with != wanted:
            raise SystemExit(f"{out} holds a cohort made with {made_with or 'unknown arguments'}, not {wanted}; "
                             "pass another --root (or delete it)")
        LOGGER.info("reusing the synthetic cohort in %s", out)
        return out
    LOGGER.info("writing a synthetic cohort: bids_lesionchange-synth %s", " ".join(map(str, args)))
    run_checked(synth_command(*args), log_file=out.parent / f"{out.name}-synth.log")
    recorded.write_text(json.dumps(wanted) + "\n")
    return out


# --------------------------------------------------------------------------------- derivatives
def change_subjects(bids: Path) -> list[str]:
    """Subjects (without ``sub-``) whose truth holds a follow-up change mask."""
    truth = bids / "derivatives" / "truth"
    return sorted(p.name[4:] for p in truth.glob("sub-*")
                  if (p / "ses-02" / "anat" / f"{p.name}_ses-02_desc-change_mask.nii.gz").is_file())


def pair_files(out: Path, sub: str, bids: Path | None = None) -> dict[str, Path]:
    """Paths of one pair's derivatives (baseline ses-01, follow-up ses-02, common space ses02)."""
    from bids_lesionchange.derivatives import pair_outputs

    outputs = pair_outputs(sub=sub, baseline="01", followup="02")
    files = {
        "baseline": out / outputs.baseline_preproc,
        "followup": out / outputs.followup_preproc,
        "brain_mask": out / outputs.brain_mask,
        "followup_xfm": out / outputs.followup_xfm,
        "probability": out / outputs.probability,
        "labels": out / outputs.labels,
        "lesions": out / outputs.lesions,
        "metrics": out / outputs.metrics,
        "preproc_qc": out / outputs.preproc_qc,
        "change_qc": out / outputs.change_qc,
    }
    if bids is not None:
        files["reference"] = (bids / "derivatives" / "truth" / f"sub-{sub}" / "ses-02" / "anat"
                              / f"sub-{sub}_ses-02_desc-change_mask.nii.gz")
    return files


def load_pair_arrays(files: dict[str, Path]):
    """One pair's preprocessed images as :func:`pair_files` names them: ``(follow-up image, baseline,
    follow-up, brain mask, probability)``, the arrays float32 (the mask boolean) on the common grid;
    the image gives the grid's affine."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(files["followup"]))
    follow = np.asarray(img.dataobj, dtype=np.float32)
    base = np.asarray(nib.load(str(files["baseline"])).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0
    prob = np.asarray(nib.load(str(files["probability"])).dataobj, dtype=np.float32)
    return img, base, follow, brain, prob


# ------------------------------------------------------------------------------ Nipype node times
def node_times(work_dir: Path) -> list[dict]:
    """Read every node's start, end and duration from the result files of a Nipype work dir.

    Returns
    -------
    list of dict (``path`` relative to ``work_dir``, ``node``, ``start``, ``end`` as POSIX
    seconds, ``seconds``), sorted by start. Nodes reused from a cache keep their first times.
    """
    from nipype.utils.filemanip import loadpkl

    rows = []
    for result in Path(work_dir).rglob("result_*.pklz"):
        try:
            runtime = loadpkl(result).runtime
        except Exception:  # noqa: BLE001 - a node that crashed leaves no readable result
            continue
        runtime = runtime[0] if isinstance(runtime, list) else runtime
        start, end = getattr(runtime, "startTime", None), getattr(runtime, "endTime", None)
        if not start or not end:
            continue
        rows.append({"path": str(result.parent.relative_to(work_dir)), "node": result.parent.name,
                     "start": datetime.fromisoformat(start).timestamp(),
                     "end": datetime.fromisoformat(end).timestamp(),
                     "seconds": round(float(runtime.duration), 2)})
    return sorted(rows, key=lambda r: r["start"])


# ------------------------------------------------------------------------------------- results
def fmt(value, digits: int = 3) -> str:
    """Format a number for a markdown table (NaN and None as n/a)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Return a GitHub/mkdocs markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pair_psf_fwhm(files: dict):
    """The pair's coarser point-spread function (mm per grid axis) from its preprocessing QC JSON,
    as the app's components step reads it (None without the report)."""
    from bids_lesionchange.analysis.files import qc_psf_fwhm

    path = files.get("preproc_qc")
    return qc_psf_fwhm(path) if path is not None and Path(path).is_file() else None


REAL_FLAIR_ROOT = Path("/tmp/bids_lesionchange_bench/real_flair")


def reference_mask(reference_dir: Path, sub: str) -> Path:
    """Where a pair's reference change mask lives in a ``--reference-dir`` tree (``real_flair.py``'s
    phantoms write theirs there)."""
    return Path(reference_dir) / f"sub-{sub}" / "ses-02" / "anat" / f"sub-{sub}_ses-02_desc-change_mask.nii.gz"


def score_labels(labels, affine, reference: Path, followup_xfm: Path, stem: Path, pair: str) -> dict[str, float]:
    """Score change labels against a reference mask as the app's evaluation does.

    Writes ``<stem>_labels.nii.gz`` and ``<stem>_metrics.tsv``
    (:func:`bids_lesionchange.analysis.files.evaluate_files`: the reference on the follow-up's grid
    is brought through ``followup_xfm``) and returns the metrics row's numbers (LTPR, PPV,
    lesion_F1, LFP, dice, n_ref, ...; ``n/a`` as NaN).
    """
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.files import evaluate_files
    from bids_lesionchange.analysis.tables import read_table_tsv

    labels_file, metrics = Path(f"{stem}_labels.nii.gz"), Path(f"{stem}_metrics.tsv")
    labels_file.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(labels).astype(np.int32), affine), str(labels_file))
    evaluate_files(str(labels_file), str(reference), str(followup_xfm), str(metrics), pair=pair)
    row = read_table_tsv(metrics)[0]
    return {k: float(v) if isinstance(v, (int, float)) else float("nan") for k, v in row.items() if k != "pair"}


def real_flair_pairs(outputs: Path | None, model_dir: Path, subjects: Sequence[str]) -> tuple[Path, list[str]]:
    """``real_flair.py``'s derivatives of a model (``outputs``, default its ``out-<model name>``)
    and the subjects among ``subjects`` that have a probability map there."""
    outputs = outputs or REAL_FLAIR_ROOT / f"out-{model_dir.name}"
    return outputs, [s for s in subjects if pair_files(outputs, s)["probability"].is_file()]


def write_results(name: str, data: dict | None, markdown: str | None = None) -> list[Path]:
    """The one writer of ``results/``: ``NAME.json`` (``data``) and ``NAME.md`` (``markdown``, printed).

    Each is written when given, atomically; returns the written paths.
    """
    from bids_lesionchange.atomic import atomic_write_json, atomic_write_text

    paths = []
    if data is not None:
        paths.append(atomic_write_json(RESULTS / f"{name}.json", data))
    if markdown is not None:
        paths.append(atomic_write_text(RESULTS / f"{name}.md", markdown))
        print(markdown)
    LOGGER.info("wrote %s", " and ".join(map(str, paths)))
    return paths


def update_results(name: str, update: dict) -> dict:
    """Merge ``update`` into ``results/NAME.json`` (for scripts that fill it section by section);
    record the machine; return the merged results."""
    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(update)
    results["machine"] = machine()
    write_results(name, results)
    return results
