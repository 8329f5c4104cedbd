"""How much do lesions that did not change "grow" between two real-texture scans, against lesions that did?

Reads a finished ``benchmarks/real_flair.py`` run (its results file and its ``--root``) and measures,
for every lesion already present at baseline, how much it grew by four measures, in two sets:

- **stable lesions of the real-texture NoChange self-pairs** (section 1 of ``real_flair.py``: every
  lesion in them is unchanged, whatever a measure says);
- **the bidsgate phantoms of patient 26** (section 3): their enlarging lesions (bidsgate's radial
  growth, x 1.3 in volume by its design; with ``--growth-factors`` also x 2 and x 3) and their other
  lesions.

A lesion here is a connected part (26-connected) of the baseline's tissue (not CSF:
:func:`bids_lesionchange.image.intensity.parenchyma_mask`) above ``LESION_LEVEL`` times its
white-matter peak (:func:`bids_lesionchange.image.intensity.white_matter_peak`), of at least
``MIN_VOXELS`` voxels (bidsgate only enlarges lesions of at least 30 voxels); its region is the
brain within ``REACH`` voxels of it and nearer to it than to any other lesion. Measures, per lesion:

1. ``hyperintense volume``: relative change of the region's voxels above ``LESION_LEVEL`` times each
   session's own white-matter peak;
2. ``integrated excess``: relative change of the sum over the region's baseline tissue of
   (intensity / white-matter peak - 1): unchanged by a blur or a shift that only moves intensity
   around inside the region;
3. ``subtraction``: mean of follow-up - baseline (each over its white-matter peak) over the region
   outside the lesion, where an enlarging lesion's new rim lies;
4. ``model``: the largest change probability over the region (the app's map, not centred).

Measures 1-3 are centred on each pair's median lesion, so a change of contrast or partial volume
that every lesion of the pair shares cancels. The table gives, per measure, the largest value on
any stable lesion of the self-pairs (the threshold above which a rule would flag no unchanged
lesion of these rescans), the share of the phantoms' enlarging lesions above it, the AUC of
enlarging lesions against the self-pairs' stable lesions, and what a rule that finds half of the
enlarging lesions (a threshold at their median) would cost: the unchanged lesions above it per
self-pair, each a false change (the done-when of issue 13 allows one per pair); and the AUC of
the enlarging lesions against the same phantoms' other lesions, which differ between the two
sessions only by bidsgate's own nuisance (atrophy, gain, noise, repositioning).

Last, every change the app wrote on a phantom (the patient-26 phantoms and the new-lesion phantoms of
the other scans) is paired with what the reference says of it (new, enlarging, or false) and the type
(new / enlarging) that the app's lesion table gives it (:func:`table_types`).

    python benchmarks/real_flair.py --phantom-seeds 1 2 3 4 5 6 --growth-factors 2 3 --pairs-per-source 4 --name real_flair_run
    python benchmarks/lesion_growth.py --results real_flair_run --name lesion_growth
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REAL_FLAIR_ROOT, REPO, command_line, load_pair_arrays, machine,  # noqa: E402
                     markdown_table, pair_files, reference_mask, setup_logging, write_results)

#: A lesion starts at this multiple of the white-matter peak on FLAIR (1.3-2 x; grey matter 1.05-1.15 x).
LESION_LEVEL = 1.3
#: Smallest lesion measured (voxels): bidsgate's longphantom enlarges only lesions of at least 30 voxels.
MIN_VOXELS = 30
#: How far (voxels) around a lesion its region reaches: a few times the 0.04-2.7 mm edge shifts measured.
REACH = 3
MEASURES = ("hyperintense volume", "integrated excess", "subtraction", "model")
CENTRED = MEASURES[:3]
#: A baseline lesion of a phantom is enlarging when this share of its voxels lie on an enlarging reference lesion.
ENLARGING_SHARE = 0.3


def lesion_measures(base, follow, brain, prob, kinds=None) -> list[dict]:
    """Every baseline lesion's measures (not yet centred) and, with ``kinds`` (the phantom's
    reference on the grid: 2 = enlarging lesion at follow-up), whether it is enlarging."""
    from scipy import ndimage

    from bids_lesionchange.image.intensity import parenchyma_mask, white_matter_peak

    peak_b, peak_f = white_matter_peak(base, brain), white_matter_peak(follow, brain)
    tissue = parenchyma_mask(base, brain)
    tissue = brain if tissue is None else tissue & brain
    high_b = tissue & (base > LESION_LEVEL * peak_b)
    high_f = brain & (follow > LESION_LEVEL * peak_f)
    labels, _ = ndimage.label(high_b, np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())
    distance, index = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[tuple(index)]
    near = (distance <= REACH) & brain
    rel_b, rel_f = base / peak_b - 1.0, follow / peak_f - 1.0
    rows = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[label] < MIN_VOXELS:
            continue
        grown = tuple(slice(max(b.start - REACH - 1, 0), b.stop + REACH + 1) for b in box)
        region = near[grown] & (nearest[grown] == label)
        lesion = labels[grown] == label
        v_b, v_f = int((region & high_b[grown]).sum()), int((region & high_f[grown]).sum())
        inside = region & tissue[grown]
        u_b, u_f = float(rel_b[grown][inside].sum()), float(rel_f[grown][inside].sum())
        rim = region & ~lesion
        row = {"voxels": int(sizes[label]),
               "hyperintense volume": (v_f - v_b) / max(v_b, 1),
               "integrated excess": (u_f - u_b) / max(u_b, 1e-6),
               "subtraction": float((rel_f[grown][rim] - rel_b[grown][rim]).mean()) if rim.any() else 0.0,
               "model": float(prob[grown][region].max()),
               "enlarging": False}
        if kinds is not None:
            row["enlarging"] = bool((kinds[grown][lesion] == 2).sum() >= ENLARGING_SHARE * sizes[label])
        rows.append(row)
    for measure in CENTRED:
        centre = float(np.median([r[measure] for r in rows])) if rows else 0.0
        for r in rows:
            r[measure] -= centre
    return rows


def phantom_kinds(out: Path, sub: str, kind_map: Path) -> np.ndarray:
    """A phantom's reference kinds (1 new, 2 enlarging; a plain reference mask: 1) on the pair's common grid."""
    import nibabel as nib

    from bids_lesionchange.image.transforms import to_common

    files = pair_files(out, sub)
    grid = nib.load(str(files["followup"]))
    return to_common(kind_map, files["followup_xfm"], grid.shape[:3], grid.affine).astype(np.int64)


def pair_lesions(out: Path, sub: str, kinds: np.ndarray | None) -> list[dict]:
    _, base, follow, brain, prob = load_pair_arrays(pair_files(out, sub))
    return lesion_measures(base, follow, brain, prob, kinds)


def table_types(out: Path, sub: str, kinds: np.ndarray) -> list[tuple[str, str]]:
    """(what the reference says, the type the app's lesion table gives) for every change the app wrote on a
    phantom: ``new`` or ``enlarging`` by the kind (``kinds``: :func:`phantom_kinds`) most of its overlap
    with the reference has, ``false`` without overlap."""
    import nibabel as nib

    from bids_lesionchange.analysis.tables import read_table_tsv

    files = pair_files(out, sub)
    labels = np.asarray(nib.load(str(files["labels"])).dataobj).astype(np.int64)
    pairs = []
    for row in read_table_tsv(files["lesions"]):
        overlap = kinds[labels == int(row["label"])]
        n_new, n_enlarging = int((overlap == 1).sum()), int((overlap == 2).sum())
        truth = "false" if n_new + n_enlarging == 0 else ("new" if n_new >= n_enlarging else "enlarging")
        pairs.append((truth, str(row["type"])))
    return pairs


def auc(positive: list[float], negative: list[float]) -> float:
    """Probability that an enlarging lesion's value exceeds a stable one's (ties count half)."""
    if not positive or not negative:
        return float("nan")
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True,
                        help="name of a finished real_flair.py run (benchmarks/results/NAME.json)")
    parser.add_argument("--root", type=Path, help="that run's --root (default: read from its command)")
    parser.add_argument("--name", default="lesion_growth")
    opts = parser.parse_args()
    setup_logging()
    source = REPO / "benchmarks" / "results" / f"{opts.results}.json"
    if not source.is_file():
        parser.error(f"{source} is missing: run benchmarks/real_flair.py --name {opts.results} first")
    run = json.loads(source.read_text())
    root = opts.root
    if root is None:
        words = run["command"].split()
        root = Path(words[words.index("--root") + 1]) if "--root" in words else REAL_FLAIR_ROOT
    out = root / f"out-{Path(run['model']).name}"
    if not out.is_dir():
        parser.error(f"{out} is missing: the run's outputs are gone; rerun {run['command']}")
    groups: dict[str, list[dict]] = {}
    per_pair = []
    types: dict[tuple[str, str], Counter] = {}
    for sub, info in sorted(run["results"].items()):
        reference = reference_mask(root / "bids" / "derivatives" / "reference", sub)
        if info["kind"] == "new-lesion phantom" and reference.is_file():  # every reference lesion is new (1)
            for truth, given in table_types(out, sub, phantom_kinds(out, sub, reference)):
                types.setdefault(("new-lesion phantoms (other scans)", truth), Counter())[given] += 1
        if info["kind"] == "nochange":
            rows = pair_lesions(out, sub, None)
            groups.setdefault("self-pairs: stable lesions", []).extend(rows)
            per_pair.append([sub, "self-pair", len(rows),
                             *[max((r[m] for r in rows), default=float("nan")) for m in MEASURES]])
        elif info["kind"] in ("phantom", "growth phantom"):
            kinds = phantom_kinds(out, sub, Path(info["kind_map"]))
            rows = pair_lesions(out, sub, kinds)
            grow = f"x {info['grow']:g}"
            for truth, given in table_types(out, sub, kinds):
                key = (f"patient-26 phantoms {grow}", truth)
                types.setdefault(key, Counter())[given] += 1
            groups.setdefault(f"phantoms {grow}: enlarging lesions", []).extend(r for r in rows if r["enlarging"])
            groups.setdefault(f"phantoms {grow}: other lesions", []).extend(r for r in rows if not r["enlarging"])
            per_pair.append([sub, f"phantom {grow}", len(rows),
                             *[max((r[m] for r in rows if not r["enlarging"]), default=float("nan"))
                               for m in MEASURES]])
    stable = groups.get("self-pairs: stable lesions", [])
    n_self_pairs = sum(1 for row in per_pair if row[1] == "self-pair")
    summary = []
    for group, rows in groups.items():
        for m in MEASURES:
            values = [r[m] for r in rows]
            limit = max((r[m] for r in stable), default=float("nan"))
            entry = {"group": group, "measure": m, "lesions": len(values),
                     "median": float(np.median(values)) if values else float("nan"),
                     "max": max(values, default=float("nan"))}
            if "enlarging" in group:
                entry["above_self_pair_max"] = int(sum(v > limit for v in values))
                entry["auc_vs_self_pairs"] = auc(values, [r[m] for r in stable])
                # the same phantoms' lesions that bidsgate did not enlarge (its own atrophy, gain, noise, motion)
                others = groups.get(group.replace("enlarging lesions", "other lesions"), [])
                entry["auc_vs_phantom_others"] = auc(values, [r[m] for r in others])
                # what a rule that finds half of these would cost: unchanged lesions flagged per self-pair
                entry["self_pair_lesions_above_median"] = (
                    sum(r[m] > entry["median"] for r in stable) / n_self_pairs if n_self_pairs else float("nan"))
            summary.append(entry)
    type_rows = [{"phantoms": group, "reference": truth, "changes": sum(c.values()), "new": c["new"],
                  "enlarging": c["enlarging"]} for (group, truth), c in sorted(types.items())]
    md = ["# Lesion growth: unchanged lesions of real-texture rescans against enlarging ones\n",
          f"Command: `{command_line()}` (on `{opts.results}`: `{run['command']}`)\n",
          f"Lesion: baseline tissue above {LESION_LEVEL} x its white-matter peak, >= {MIN_VOXELS} voxels; region: "
          f"the brain within {REACH} voxels, nearer to it than to another lesion. Measures 1-3 centred on each "
          "pair's median lesion.\n",
          "## Per group\n",
          markdown_table(["group", "measure", "lesions", "median", "max", "enlarging above the self-pairs' max",
                          "AUC against the self-pairs' stable lesions",
                          "stable lesions per self-pair above the enlarging median",
                          "AUC against the same phantoms' other lesions"],
                         [[e["group"], e["measure"], e["lesions"], e["median"], e["max"],
                           e.get("above_self_pair_max", ""), e.get("auc_vs_self_pairs", ""),
                           e.get("self_pair_lesions_above_median", ""), e.get("auc_vs_phantom_others", "")]
                          for e in summary]),
          "## Per pair: the largest value on a lesion that did not change\n",
          markdown_table(["pair", "kind", "lesions", *MEASURES], per_pair),
          "## The lesion table's type against the reference\n",
          "Every change the app wrote on a phantom, by what the reference says of it (the kind of reference lesion "
          "most of its overlap lies on; false: no overlap) and the type its lesion table gives (*enlarging* when "
          "it touches a hyperintensity present at baseline).\n",
          markdown_table(["phantoms", "reference", "changes", "typed new", "typed enlarging"],
                         [[r["phantoms"], r["reference"], r["changes"], r["new"], r["enlarging"]] for r in type_rows])]
    write_results(opts.name, {"command": command_line(), "source": opts.results, "machine": machine(),
                              "lesion_level": LESION_LEVEL, "min_voxels": MIN_VOXELS, "reach": REACH,
                              "summary": summary, "per_pair": per_pair,
                              "types": type_rows,
                              "lesions": {g: rows for g, rows in groups.items()}}, "\n".join(md))


if __name__ == "__main__":
    main()
