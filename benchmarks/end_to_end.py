"""End-to-end speed and peak memory of one 1 mm pair through the app, per stage, and inference GFLOP/s.

Usage::

    python benchmarks/end_to_end.py                            # HD-BET (auto) and threshold, ~4 min
    python benchmarks/end_to_end.py --skull-strip threshold --nprocs 2
    python benchmarks/end_to_end.py --skull-strip auto --nprocs 2 --pairs 3   # three subjects in one run
    python benchmarks/end_to_end.py --skull-strip auto --nprocs 2 --onednn-max-isa AVX2  # the AVX2 path

Writes ``benchmarks/results/end_to_end.{json,md}`` and prints the table.

One Change pair (``bids_lesionchange-synth DIR --n-nochange 0 --n-change 1 --seed 4242 --preset
1mm``; ``--pairs N``: N Change subjects, one pair each, in one run) runs through
``bids_lesionchange DIR OUT participant --mode infer`` with the default model,
from an empty work dir, once per ``--skull-strip`` method, in a child process. The script polls
/proc every 0.2 s and sums the memory of the app's whole process tree (HD-BET's own process
included) two ways: resident set sizes (RSS), which count a page once per process that maps it
(the shared libraries, and what Nipype's forked workers share with the app's process), and
proportional set sizes (PSS, ``/proc/PID/smaps_rollup``), which split a shared page among the
processes that share it, so their sum is what the machine must hold at once. With ``--nprocs 1``
(default) the app uses Nipype's Linear plugin, nodes run one after the other in the app's own
process, and each node's time (from its Nipype result file) and the tree's peak memory during
that node are the stage's own. "startup" is the time from launch to the first node (imports,
BIDS validation, graph building), "finish" from the last node to exit (reports).

Inference throughput: convolution FLOPs of one forward pass (``forward_flops``, final output
only) over the brain's bounding box padded to the network's input multiple, divided (a) by the
``predict`` node's time (includes TensorFlow import, model load, NIfTI I/O) and (b) by the best of
two forward passes alone on the same pair in a separate process, and compared with this CPU's FP32
peak (``_common.machine``). Targets (issue 15): <= 45 s and <= 3 GB for one pair on 2 cores. With
``--pairs N`` every node's seconds are summed over the N pairs (the predict node's GFLOP/s uses its
mean per pair), and the peak is that of the whole run: with ``--nprocs 2`` one subject's nodes run
beside another's, which is where memory kept by a finished node (a worker that ran TensorFlow) counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, app_command, checked_model, clock_note, command_line,  # noqa: E402
                     ensure_synth_cohort, machine, machine_pace, markdown_table, node_times, pair_files, run_monitored,
                     setup_logging, write_results)

LOGGER = logging.getLogger("benchmarks.end_to_end")
TARGET_SECONDS, TARGET_GB = 45.0, 3.0  # issue 15: per 1 mm pair with HD-BET on 2 cores


def forward_child(model_dir: str, baseline: str, followup: str, mask: str, threads: int) -> dict:
    """Time forward passes alone (in this process) and count their FLOPs; return a JSON-able dict."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.model._backend import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from bids_lesionchange.model.detector import forward_flops
    from bids_lesionchange.model.inference import brain_bounding_box, predict_change
    from bids_lesionchange.model.io import hyperparams_from_dict, load_detector

    model, spec = load_detector(model_dir)
    params = hyperparams_from_dict(spec["hyperparams"]).detector
    arrays = [np.asarray(nib.load(p).dataobj, dtype=np.float32) for p in (baseline, followup)]
    brain = np.asarray(nib.load(mask).dataobj) > 0
    multiple = int(spec["input_multiple"])
    box = tuple(int(-(-(s.stop - s.start) // multiple) * multiple) for s in brain_bounding_box(brain))
    times = []
    for _ in range(3):  # the first pass traces the graph
        began = time.perf_counter()
        predict_change(model, spec, arrays[0], arrays[1], brain)
        times.append(time.perf_counter() - began)
    flops = forward_flops(params, box, final_only=True)
    return {"network_input": list(box), "volume": list(brain.shape), "gflop": round(flops / 1e9, 2),
            "forward_seconds_first": round(times[0], 2), "forward_seconds": round(min(times[1:]), 2),
            "parameters": int(model.count_params()), "threads": threads}


_PREDICT_PARTS = re.compile(r"predict: TensorFlow imported in ([\d.]+) s, model and images loaded in ([\d.]+) s, "
                            r"map computed in ([\d.]+) s .*?, written in ([\d.]+) s")


def predict_parts(log_text: str) -> dict | None:
    """Where the predict steps' time went, from the app's log (``model.files.predict_files``): the
    seconds of each part summed over the run's predict steps, or None when the log has no such line."""
    found = _PREDICT_PARTS.findall(log_text)
    if not found:
        return None
    keys = ("tensorflow_import", "load", "compute", "write")
    return {key: round(sum(float(row[i]) for row in found), 2) for i, key in enumerate(keys)}


def run_method(bids: Path, root: Path, model: Path, method: str, opts) -> dict:
    """Run the app once from scratch with one skull-strip method; return timings and memory."""
    out, work = root / f"out_{method}", root / f"work_{method}"
    for stale in (out, work):
        if stale.exists():
            shutil.rmtree(stale)
    args = [bids, out, "participant", "--mode", "infer", "--model", model, "-w", work,
            "--nprocs", opts.nprocs, "--omp-nthreads", opts.omp_nthreads, "--skull-strip", method,
            *shlex.split(opts.app_args)]
    LOGGER.info("%s: bids_lesionchange %s", method, " ".join(map(str, args)))
    run = run_monitored(app_command(*args), log_file=root / f"run_{method}.log")
    if run["returncode"] != 0:
        raise RuntimeError(f"the app failed ({run['returncode']}); see {root / f'run_{method}.log'}")
    nodes = node_times(work)
    process_start = run["started_at"]
    process_end = process_start + run["wall_seconds"]
    timelines = {"peak_tree_rss_gb": [(process_start + t, gb) for t, gb in run.pop("rss_timeline")],
                 "peak_tree_pss_gb": [(process_start + t, gb) for t, gb in run.pop("pss_timeline")]}

    def peaks(start: float, end: float) -> dict:
        return {key: max([gb for t, gb in line if start <= t <= end], default=0.0) if line else None
                for key, line in timelines.items()}

    stages: dict[str, dict] = {}
    for node in nodes:
        entry = stages.setdefault(node["node"], {"seconds": 0.0, "peak_tree_rss_gb": 0.0, "peak_tree_pss_gb": 0.0})
        entry["seconds"] = round(entry["seconds"] + node["seconds"], 2)
        for key, gb in peaks(node["start"] - 0.2, node["end"] + 0.2).items():
            entry[key] = None if gb is None else max(entry[key], gb)
    first = min(n["start"] for n in nodes)
    last = max(n["end"] for n in nodes)
    stages = {"startup": {"seconds": round(first - process_start, 2), **peaks(process_start, first)},
              **stages,
              "finish": {"seconds": round(process_end - last, 2), **peaks(last, process_end)}}
    # When no node runs (between nodes: Nipype's scheduling, hashing and result files)
    busy, covered_until = 0.0, first
    for node in nodes:
        start, end = max(node["start"], covered_until), node["end"]
        busy += max(end - start, 0.0)
        covered_until = max(covered_until, end)
    timeline = [{"node": n["node"], "start": round(n["start"] - process_start, 2),
                 "end": round(n["end"] - process_start, 2)} for n in nodes]
    sub = sorted(p.name[4:] for p in bids.glob("sub-*"))[0]
    files = pair_files(out, sub)
    predict_nodes = [n for n in nodes if n["node"] == "predict"]
    predict_seconds = (round(sum(n["seconds"] for n in predict_nodes) / len(predict_nodes), 2)
                       if predict_nodes else None)
    parts = predict_parts((root / f"run_{method}.log").read_text(errors="replace"))
    if parts is not None:  # the rest of the node: starting its process, importing the package, the result's way back
        parts["rest"] = round(sum(n["seconds"] for n in predict_nodes) - sum(parts.values()), 2)
    return {"method": method, "command": "bids_lesionchange " + " ".join(map(str, args)), **run,
            "node_seconds_total": round(sum(n["seconds"] for n in nodes), 1), "stages": stages,
            "between_nodes_seconds": round(last - first - busy, 2), "timeline": timeline,
            "files": {k: str(v) for k, v in files.items()}, "predict_node_seconds": predict_seconds,
            "predict_parts_seconds": parts}


def group_stages(stages: dict) -> dict:
    """Sum stages into startup / preprocessing / predict / post-processing / derivatives / finish."""
    groups = {"startup": 0.0, "preprocessing": 0.0, "predict": 0.0, "post-processing": 0.0,
              "derivatives and reports": 0.0, "finish": 0.0}
    post = ("components", "lesion_table", "native_probability", "native_mask")
    for name, entry in stages.items():
        if name in ("startup", "finish", "predict"):
            key = name
        elif name in post:
            key = "post-processing"
        elif name.startswith("ds_") or "report" in name:
            key = "derivatives and reports"
        else:
            key = "preprocessing"
        groups[key] = round(groups[key] + entry["seconds"], 2)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids_lesionchange_bench"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--preset", choices=["small", "1mm"], default="1mm")
    parser.add_argument("--skull-strip", nargs="+", default=["auto", "threshold"])
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=1, help="Change subjects (one pair each) in the run")
    parser.add_argument("--omp-nthreads", type=int, default=2)
    parser.add_argument("--app-args", default="", help="more arguments for the app")
    parser.add_argument("--name", default="end_to_end", help="results file name (results/NAME.json|md)")
    parser.add_argument("--onednn-max-isa", type=str.upper, metavar="ISA",
                        help="cap oneDNN (TensorFlow's and PyTorch's convolutions) at this instruction set "
                        "for the whole run, e.g. AVX2: the AVX2 path of the app measured on an AVX-512 CPU "
                        "(ONEDNN_MAX_CPU_ISA; PyTorch's own kernels follow via ATEN_CPU_CAPABILITY; HD-BET's "
                        "precision auto then chooses float32; NumPy's BLAS is not capped)")
    parser.add_argument("--forward-child", nargs=5, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.onednn_max_isa:
        from bids_lesionchange.cpu import ISA_ORDER, onednn_allows

        if not any(opts.onednn_max_isa in names for names in ISA_ORDER):
            parser.error(f"--onednn-max-isa {opts.onednn_max_isa}: not one of oneDNN's names "
                         f"({', '.join(n for names in ISA_ORDER for n in names)})")
        # set here, before any child starts: the app, HD-BET's process, the predict process and the
        # forward-pass child inherit it, and machine() records it with the peak of the usable units
        os.environ["ONEDNN_MAX_CPU_ISA"] = opts.onednn_max_isa
        if not onednn_allows("AVX512_CORE"):
            os.environ["ATEN_CPU_CAPABILITY"] = "avx2" if onednn_allows("AVX2") else "default"
    if opts.forward_child:
        *paths, threads = opts.forward_child
        print(json.dumps(forward_child(*paths, int(threads))))
        return
    setup_logging()
    root = opts.root.resolve() / opts.name
    root.mkdir(parents=True, exist_ok=True)
    model = checked_model(parser, opts.model)
    if opts.pairs < 1:
        parser.error("--pairs must be at least 1")
    bids = ensure_synth_cohort(root / "bids", n_nochange=0, n_change=opts.pairs, seed=opts.seed,
                               preset=opts.preset)

    pace = {"before": machine_pace()}
    runs = [run_method(bids, root, model, method, opts) for method in opts.skull_strip]
    pace["after"] = machine_pace()
    files = runs[0]["files"]
    LOGGER.info("timing forward passes alone on the preprocessed pair")
    child = subprocess.run([sys.executable, __file__, "--forward-child", str(model), files["baseline"],
                            files["followup"], files["brain_mask"], str(opts.omp_nthreads)],
                           capture_output=True, text=True, check=True)
    forward = json.loads(child.stdout.strip().splitlines()[-1])
    forward["gflops_per_s"] = round(forward["gflop"] / forward["forward_seconds"], 1)
    host = machine()
    peak = host["cpu"]["fp32_peak_gflops"]
    forward["fraction_of_peak"] = round(forward["gflops_per_s"] / peak, 3)
    for run in runs:
        seconds = run["predict_node_seconds"]
        run["predict_node_gflops_per_s"] = round(forward["gflop"] / seconds, 1) if seconds else None
        run["groups"] = group_stages(run["stages"])
        run["meets_targets"] = {"seconds": run["wall_seconds"] <= TARGET_SECONDS if opts.pairs == 1 else None,
                                "memory": run["peak_tree_rss_gb"] <= TARGET_GB,
                                "memory_pss": (None if run["peak_tree_pss_gb"] is None
                                               else run["peak_tree_pss_gb"] <= TARGET_GB)}

    names = [r["method"] for r in runs]
    memory_keys = ("peak_tree_rss_gb", "peak_tree_pss_gb")
    headers = (["stage"] + [f"{n}: s" for n in names] + [f"{n}: peak GB, RSS" for n in names]
               + [f"{n}: peak GB, PSS" for n in names])
    stage_names = list(dict.fromkeys(s for r in runs for s in r["stages"]))
    stage_rows = [[s, *[r["stages"].get(s, {}).get("seconds") for r in runs],
                   *[r["stages"].get(s, {}).get(key) for key in memory_keys for r in runs]]
                  for s in stage_names if not s.startswith("ds_")]
    sinks = [s for s in stage_names if s.startswith("ds_")]
    stage_rows.insert(-1, [f"ds_* ({len(sinks)} derivative sinks)",
                           *[round(sum(r["stages"].get(s, {}).get("seconds", 0) for s in sinks), 2) for r in runs],
                           *[max((r["stages"].get(s, {}).get(key) or 0 for s in sinks), default=0)
                             for key in memory_keys for r in runs]])
    stage_rows.append(["**total (wall)**", *[r["wall_seconds"] for r in runs],
                       *[r[key] for key in memory_keys for r in runs]])
    group_headers = ["group"] + [f"{n}: s" for n in names]
    group_rows = [[g, *[r["groups"][g] for r in runs]] for g in runs[0]["groups"]]
    summary_headers = ["skull strip", f"wall s (target {TARGET_SECONDS:g})" if opts.pairs == 1
                       else f"wall s, {opts.pairs} pairs",
                       f"peak GB, process tree, summed RSS (target {TARGET_GB:g})",
                       f"peak GB, process tree, summed PSS (target {TARGET_GB:g})", "largest single process GB",
                       "predict node s" + (" (mean per pair)" if opts.pairs > 1 else ""), "GFLOP/s predict node",
                       "s with no node running (first to last node)"]
    summary_rows = [[r["method"], r["wall_seconds"], r["peak_tree_rss_gb"], r["peak_tree_pss_gb"],
                     r["max_single_process_rss_gb"],
                     r["predict_node_seconds"], r["predict_node_gflops_per_s"], r["between_nodes_seconds"]]
                    for r in runs]
    command = command_line()
    markdown = (
        f"# End to end: {'one 1 mm pair' if opts.pairs == 1 else f'{opts.pairs} 1 mm pairs in one run'} "
        "through the app\n\n"
        f"`bids_lesionchange-synth BIDS --n-nochange 0 --n-change {opts.pairs} --seed {opts.seed} --preset {opts.preset}`, "
        f"then `bids_lesionchange BIDS OUT participant --mode infer --model {model.name} --nprocs {opts.nprocs} "
        f"--omp-nthreads {opts.omp_nthreads} --skull-strip METHOD` from an empty work dir. Machine load "
        f"(1 min) at the end: {machine()['load_average_1min']} on {machine()['cpu_count']} CPUs.\n\n"
        f"CPU: {host['cpu']['model']}, {host['cpu']['cores']} cores, {', '.join(host['cpu']['extensions'])}"
        + (f"; **oneDNN capped at {host['cpu']['onednn_max_cpu_isa']}** (ONEDNN_MAX_CPU_ISA)"
           if host["cpu"].get("onednn_max_cpu_isa") else "")
        + f"; FP32 peak {peak:g} GFLOP/s for the units the convolutions may use.\n\n"
        f"Command: `{command}`\n\n"
        f"## Summary\n\n{markdown_table(summary_headers, summary_rows)}\n"
        "Summed RSS counts a page once per process that maps it; summed PSS counts it once (what the "
        "machine must hold).\n\n"
        f"## Stages (grouped)\n\n{markdown_table(group_headers, group_rows)}\n"
        f"## Every node (seconds{'' if opts.pairs == 1 else ', summed over the pairs'}; peak memory of the whole "
        "process tree while it ran)\n\n"
        f"{markdown_table(headers, stage_rows)}\n"
        "## Inference throughput\n\n"
        + markdown_table(["network input", "GFLOP / pass", "forward pass s (best of 2, after tracing)",
                          "first pass s", "GFLOP/s", f"fraction of {peak:g} GFLOP/s peak"],
                         [[" x ".join(map(str, forward["network_input"])), forward["gflop"],
                           forward["forward_seconds"], forward["forward_seconds_first"],
                           forward["gflops_per_s"], forward["fraction_of_peak"]]])
        + f"\nThe predict node (TensorFlow import, model load, I/O and one pass) reaches "
        + ", ".join(f"{r['predict_node_gflops_per_s']} GFLOP/s ({r['method']})" for r in runs) + ".\n"
        + ("\nWhere the predict node's time goes (its own log line; rest: starting its process, importing "
           "the package, sending the result back"
           + (", summed over the pairs" if opts.pairs > 1 else "") + "):\n\n"
           + markdown_table(["skull strip", "TensorFlow import s", "model and images loaded s",
                             "map computed s (trace + first pass)", "written s", "rest s"],
                            [[r["method"], *(r["predict_parts_seconds"][k] for k in
                                             ("tensorflow_import", "load", "compute", "write", "rest"))]
                             for r in runs if r.get("predict_parts_seconds")])
           if any(r.get("predict_parts_seconds") for r in runs) else "")
        + "\n## This machine's pace, before and after the runs (`_common.machine_pace`)\n\n"
        + markdown_table(["when", "NumPy sgemm GFLOP/s", "fraction of peak", "Python loop, M iterations/s",
                          "new memory written, GB/s"],
                         [[when, v["sgemm_gflops"], v["sgemm_fraction_of_peak"], v["python_mloops_per_s"],
                           v["fresh_memory_gb_per_s"]] for when, v in pace.items()])
        + "\nTwo VMs of one CPU model can differ 2-4x in every step; compare times from two machines "
        "through these probes, not as they are.\n"
        + (f"\n{note}\n" if (note := clock_note([v["sgemm_fraction_of_peak"] for v in pace.values()],
                                                 host.get("cpu"))) else "")
    )
    data = {"command": command, "machine": host, "targets": {"seconds": TARGET_SECONDS, "peak_gb": TARGET_GB},
            "peak_gflops": peak, "model": str(model), "seed": opts.seed, "preset": opts.preset,
            "nprocs": opts.nprocs, "omp_nthreads": opts.omp_nthreads, "pairs": opts.pairs, "runs": runs,
            "forward": forward, "pace": pace}
    write_results(opts.name, data, markdown)


if __name__ == "__main__":
    main()
