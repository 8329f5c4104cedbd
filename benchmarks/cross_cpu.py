"""The same real-FLAIR benchmark on two CPUs: does the answer depend on the machine?

Usage: python benchmarks/cross_cpu.py A B [--name NAME]

``A`` and ``B`` are results of ``benchmarks/real_flair.py`` (names in ``benchmarks/results/``)
run with the same command (``--seed``, ``--pairs-per-source``, phantoms) on two machines. A lab
runs the app on whatever CPU it has: the floating-point path differs between them (AVX2 or
AVX-512 kernels in oneDNN, HD-BET in bfloat16 where the CPU has AVX512_BF16 or AMX, float32
elsewhere), so the same pair must give the same detections in substance, not bit for bit.

Per pair, for the app's model and for subtraction at d > 0.1 under the same rule: changes and the
percentage of the brain above the threshold on each CPU, and lesion F1 where the pair has a
reference (bidsgate phantoms). The summary counts the pairs whose number of changes is the same
and gives the largest difference in the share of the brain above κ. Writes
``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, fmt, markdown_table, setup_logging, write_results

METHODS = ("model", "subtraction d > 0.1")


def load(name: str) -> dict:
    """The results of a real_flair.py run, by name; exits with a message when absent."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        sys.exit(f"cross_cpu: no results {path}; run benchmarks/real_flair.py --name {name} first")
    data = json.loads(path.read_text())
    if not isinstance(data.get("results"), dict):
        sys.exit(f"cross_cpu: {path} is not a real_flair.py result (no per-pair 'results')")
    return data


def cpu_label(data: dict) -> str:
    cpu = data.get("machine", {}).get("cpu", {})
    ext = "/".join(e for e in cpu.get("extensions", []) if e in ("avx2", "avx512f", "avx512_bf16", "amx_tile"))
    return (f"{cpu.get('model', '?')} family {cpu.get('family', '?')} model {cpu.get('model_number', '?')} "
            f"({ext or 'no AVX'})")


def compare(a: dict, b: dict) -> dict:
    """Per pair and method: (A, B) of changes, fraction above and lesion F1; plus a summary."""
    pairs = [p for p in a["results"] if p in b["results"]]
    rows, summary = [], {}
    for method in METHODS:
        same = 0
        largest = 0.0
        compared = 0
        for pair in pairs:
            sa = a["results"][pair].get("scores", {}).get(method)
            sb = b["results"][pair].get("scores", {}).get(method)
            if not sa or not sb:
                continue
            compared += 1
            same += int(sa["n_changes"] == sb["n_changes"])
            largest = max(largest, abs(sa["fraction_above"] - sb["fraction_above"]))
            rows.append({"pair": pair, "kind": a["results"][pair].get("kind", ""), "method": method,
                         "changes": [sa["n_changes"], sb["n_changes"]],
                         "percent_above": [100 * sa["fraction_above"], 100 * sb["fraction_above"]],
                         "lesion_F1": [sa.get("lesion_F1"), sb.get("lesion_F1")]})
        summary[method] = {"pairs": compared, "same_number_of_changes": same,
                           "largest_difference_percent_above": 100 * largest}
    only = sorted(set(a["results"]) ^ set(b["results"]))
    return {"rows": rows, "summary": summary, "pairs_in_one_run_only": only}


def markdown(name_a: str, name_b: str, a: dict, b: dict, result: dict) -> str:
    lines = ["# The same real-FLAIR benchmark on two CPUs", "",
             f"A: `{name_a}` on {cpu_label(a)}; its command: `{a.get('command', '?')}`",
             f"B: `{name_b}` on {cpu_label(b)}; its command: `{b.get('command', '?')}`", "",
             f"Command: `{command_line()}`", "", "## Summary", ""]
    lines.append(markdown_table(
        ["method", "pairs", "same number of changes", "largest difference in % of the brain above threshold"],
        [[m, s["pairs"], s["same_number_of_changes"], fmt(s["largest_difference_percent_above"], 2)]
         for m, s in result["summary"].items()]))
    if result["pairs_in_one_run_only"]:
        lines += ["", "Pairs in one run only (not compared): " + ", ".join(result["pairs_in_one_run_only"])]
    lines += ["", "## Every pair (A / B)", ""]
    lines.append(markdown_table(
        ["pair", "kind", "method", "changes", "% of brain above threshold", "lesion F1"],
        [[r["pair"], r["kind"], r["method"], f"{r['changes'][0]} / {r['changes'][1]}",
          f"{fmt(r['percent_above'][0], 2)} / {fmt(r['percent_above'][1], 2)}",
          "" if r["lesion_F1"][0] is None else f"{fmt(r['lesion_F1'][0])} / {fmt(r['lesion_F1'][1])}"]
         for r in result["rows"]]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="results name of the run on the first CPU")
    parser.add_argument("b", help="results name of the run on the second CPU")
    parser.add_argument("--name", default="cross_cpu", help="results file name (results/NAME.json|md)")
    args = parser.parse_args(argv)
    setup_logging()
    a, b = load(args.a), load(args.b)
    if a.get("command", "").split("--name")[0] != b.get("command", "").split("--name")[0]:
        print("cross_cpu: warning: the two runs' commands differ before --name; pairs may differ",
              file=sys.stderr)
    result = compare(a, b)
    write_results(args.name, {"command": command_line(), "a": args.a, "b": args.b,
                              "cpu_a": a.get("machine", {}).get("cpu"), "cpu_b": b.get("machine", {}).get("cpu"),
                              **result}, markdown(args.a, args.b, a, b, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
