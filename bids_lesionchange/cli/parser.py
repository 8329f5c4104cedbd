"""The command-line parser (standard library only: ``--help`` must stay fast and light)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from bids_lesionchange import __version__
from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.model.io import MODEL_SPEC  # no TensorFlow: model/io.py imports it only to load weights

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "default_model"
_LABEL = re.compile(r"^[A-Za-z0-9]+$")

EPILOG = """\
examples:
  bids_lesionchange /data/bids /data/out participant --mode infer
  bids_lesionchange /data/bids /data/out participant --participant-label 01 02 --nprocs 2
  bids_lesionchange /data/bids /data/out group --mode train --nochange-label 03 04 05
  bids_lesionchange /data/bids /data/out group --mode evaluate
  bids_lesionchange /data/bids /data/out group --mode summarise

NoChange subjects (group --mode train) are those with --nochange-label, or else those whose
column 'group' in participants.tsv equals 'NoChange' (change with --nochange-column/-value).

checked before any subject is processed (exit code 2, nothing run): every option and --config
value against its allowed range (named with the key), the model's files against the SHA-256 in
its model.json, and --device cuda against the GPUs PyTorch sees. Then every FLAIR file: a broken
symbolic link, a truncated .nii.gz or one holding less data than its header says fails that pair
only (step check_inputs, with the file and the fix) while the others run. A damaged file in the
work dir (left by an interrupted run) is named, with the advice to delete the work dir or rerun
with a fresh -w. SIGTERM or SIGINT stops the workers, writes the summary so far and exits 143 or
130; rerun with the same -w to resume. Exit codes: 0 all pairs done, 1 a pair failed, 2 usage error.
"""


def _label(value: str) -> str:
    value = value.removeprefix("sub-").removeprefix("ses-")
    if not _LABEL.match(value):
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a BIDS label: use letters and digits only, e.g. '01' or 'sub-01'"
        )
    return value


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a one-sentence error otherwise."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"'{value}' must be {minimum} or more")
        return number

    return parse


def number_between(low: float, high: float, *, inclusive: bool, include_high: bool | None = None):
    """An argparse type: a number in [low, high] (``inclusive``) or in (low, high).

    ``include_high`` overrides ``inclusive`` at the upper end, e.g. ``inclusive=False,
    include_high=True`` accepts (low, high].
    """
    closed_high = inclusive if include_high is None else include_high

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
        above_low = low <= number if inclusive else low < number
        below_high = number <= high if closed_high else number < high
        if not (above_low and below_high):
            if closed_high != inclusive:
                interval = f"{'[' if inclusive else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
                raise argparse.ArgumentTypeError(f"'{value}' must lie in {interval}")
            raise argparse.ArgumentTypeError(
                f"'{value}' must lie between {low:g} and {high:g}" if inclusive
                else f"'{value}' must lie strictly between {low:g} and {high:g}")
        return number

    return parse


def number_above(minimum: float):
    """An argparse type: a finite number > ``minimum``, with a one-sentence error otherwise."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
        if not (number > minimum and number != float("inf")):
            raise argparse.ArgumentTypeError(f"'{value}' must be a finite number above {minimum:g}")
        return number

    return parse


def _device(value: str) -> str:
    """An argparse type: ``cpu``, ``cuda`` or ``cuda:N`` (HD-BET's device)."""
    if value == "cpu" or value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"unknown device '{value}': use cpu, cuda or cuda:N")


_positive_int = int_at_least(1)
_nonnegative_int = int_at_least(0)
_probability = number_between(0.0, 1.0, inclusive=False)
_fraction_of_brain = number_between(0.0, 1.0, inclusive=False, include_high=True)
_extent_mm = number_between(0.0, 50.0, inclusive=True)


def build_parser() -> argparse.ArgumentParser:
    """Return the BIDS-App argument parser."""
    parser = argparse.ArgumentParser(
        prog="bids_lesionchange",
        description=(
            "Detect new and enlarging multiple sclerosis lesions between two FLAIR sessions "
            "(self-supervised siamese 3D U-net, To et al. 2021)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root of the BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where the derivatives are written")
    parser.add_argument(
        "analysis_level", choices=["participant", "group"],
        help="participant: per-subject preprocessing and change detection; "
        "group: training on NoChange subjects, or aggregation of metrics",
    )
    parser.add_argument("--version", action="version", version=f"bids_lesionchange {__version__}")
    parser.add_argument(
        "--mode", default=None,
        choices=["infer", "preprocess", "train", "adapt", "evaluate", "summarise"],
        help="participant: 'infer' (default) or 'preprocess' (stop after preprocessing); "
        "group: 'train' (default), 'adapt' (fine-tune a copy of --model on self-pairs of every "
        "session of the cohort, no label used; --adapt-steps, default 100), 'evaluate' "
        "(aggregate per-pair metrics) or 'summarise' (one table of every detected change of the "
        "cohort and one of every pair with its status, from the participant outputs)",
    )

    g = parser.add_argument_group("selecting data")
    g.add_argument("--participant-label", "--participant_label", nargs="+", type=_label, default=[],
                   metavar="LABEL", help="subjects to process (with or without 'sub-'); default: all")
    g.add_argument("--session-label", nargs="+", type=_label, default=[], metavar="LABEL",
                   help="sessions to use, earliest first; consecutive ones form pairs "
                   "(default: every session with a FLAIR, in the order of the acquisition times the "
                   "dataset records (acq_time in sessions.tsv or scans.tsv, AcquisitionDateTime in the "
                   "JSON), else of labels that say it (1/2/10, M6/M12, baseline/followup, pre/post); "
                   "a subject whose order neither tells is skipped)")
    g.add_argument("--nochange-label", nargs="+", type=_label, default=[], metavar="LABEL",
                   help="subjects without change, used for training (group --mode train)")
    g.add_argument("--nochange-column", default="group",
                   help="participants.tsv column naming NoChange subjects (default: group)")
    g.add_argument("--nochange-value", default="NoChange",
                   help="value of that column for NoChange subjects (default: NoChange)")
    g.add_argument("--self-pairs", type=int_at_least(0), default=0, metavar="N",
                   help="group --mode train: also make N NoChange pairs per NoChange subject by "
                   "simulating rescans of its FLAIR (new grid, slice plane, pose, contrast, bias, "
                   "noise, artefacts), so subjects with a single session are training material "
                   "(default: 0, real pairs only)")
    g.add_argument("--skip-bids-validation", action="store_true",
                   help="do not run the BIDS validator on the input")
    g.add_argument("--reference-dir", type=Path, default=None,
                   help="derivatives dataset with reference change masks "
                   "(sub-X/ses-Y/anat/sub-X_ses-Y_*desc-change_mask.nii.gz); enables evaluation")

    g = parser.add_argument_group("method")
    g.add_argument("--model", type=Path, default=None,
                   help="a trained model directory (default: the model shipped in the package)")
    g.add_argument("--config", type=Path, default=None,
                   help="YAML or TOML file of hyper-parameters (sections vae, supermix, detector, training)")
    g.add_argument("--preset", choices=["cpu", "paper"], default="cpu",
                   help="hyper-parameter preset for training: 'cpu' (default) or 'paper' (GPU)")
    g.add_argument("--threshold", type=_probability, default=0.1,
                   help="change probability threshold kappa (default: 0.1)")
    g.add_argument("--min-blob-size", type=_positive_int, default=20,
                   help="smallest change kept, in voxels of 1 mm^3 (default: 20; the paper also uses 100)")
    g.add_argument("--adapt-steps", type=_nonnegative_int, default=0, metavar="N",
                   help="participant: before inference, fine-tune a copy of the model for N steps on "
                   "self-pairs of the pair's own two sessions (each against a nuisance-rich copy of "
                   "itself: no label, no real change is used), so it learns this scanner's texture as "
                   "'no change'; the copy stays in the work directory (default: 0, the model as given; "
                   "docs/method.md gives the cost and what it changed)")
    g.add_argument("--max-change-fraction", type=_fraction_of_brain, default=MAX_PLAUSIBLE_FRACTION,
                   metavar="FRACTION",
                   help="participant: a pair whose change probability exceeds kappa over more than "
                   "this fraction of the brain, in (0, 1], is flagged out of domain (the model does not "
                   "fit the scans) with a warning; its outputs are still written "
                   f"(default: {MAX_PLAUSIBLE_FRACTION:g})")
    g.add_argument("--change-direction", choices=["increase", "any"], default="increase",
                   help="increase (default): a change must be brighter on the follow-up than at baseline, "
                   "outside CSF, hyperintense (above the brain's median) and mostly in tissue that was not "
                   "hyperintense at baseline, as new and enlarging lesions are on FLAIR; any: every change the network finds (the paper)")
    g.add_argument("--extent-mm", type=_extent_mm, default=0.0, metavar="MM",
                   help="participant, --change-direction increase: grow each change by up to MM into the "
                   "adjacent tissue that became newly hyperintense and brightened (the network's map covers "
                   "part of a large or enlarging lesion; the number of changes does not grow). 0 (default): "
                   "off; 6: the largest lesion radius the shipped model was trained on (docs/method.md gives "
                   "what it changed)")
    g.add_argument("--match", choices=["iou", "overlap", "msseg2"], default="iou",
                   help="lesion matching for evaluation: IoU >= 0.01 (default, the paper), any overlap, "
                   "or msseg2: the MSSEG-2 challenge's detection rule (Anima's animaSegPerfAnalyzer: "
                   "6-connected lesions above 3 mm^3, > 10 %% covered; docs/method.md)")
    g.add_argument("--skull-strip", choices=["auto", "hdbet", "threshold", "none"], default="auto",
                   help="auto: HD-BET if its weights are installed, else the offline threshold method; "
                   "none: the inputs are already brain-extracted")
    g.add_argument("--hdbet-mode", choices=["fast", "accurate"], default="fast",
                   help="fast: one fold, no test-time augmentation (CPU default); accurate: 5-fold ensemble")
    g.add_argument("--hdbet-precision", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto (default): HD-BET's convolutions in bfloat16 on a CPU that computes it "
                   "natively (AVX512_BF16 or AMX: 1.6-1.9x faster per image, brain masks of Dice "
                   ">= 0.998 against float32 on six real FLAIRs) and oneDNN may use it (not under "
                   "ONEDNN_MAX_CPU_ISA=AVX2 or another cap below AVX512_CORE_BF16), float32 elsewhere")
    g.add_argument("--device", type=_device, default="cpu",
                   help="device for HD-BET: cpu, cuda or cuda:N (default: cpu); a CUDA device must be "
                   "visible to PyTorch, which is checked before the run starts")
    g.add_argument("--output-resolution", type=float, default=1.0, metavar="MM",
                   help="voxel size of the common space in mm (default: 1.0, as the paper; "
                   "coarser only for quick tests)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--no-native", dest="write_native", action="store_false",
                   help="do not resample results onto the follow-up's original grid")
    g.add_argument("--no-reports", dest="reports", action="store_false", help="skip the HTML reports")

    g = parser.add_argument_group("resources")
    g.add_argument("-w", "--work-dir", type=Path, default=None,
                   help="working directory, reused to resume; about 0.26 GB per 1 mm pair (intermediate images "
                        "are kept uncompressed), safe to delete after the run (default: "
                        "OUTPUT_DIR/../work-bids_lesionchange)")
    g.add_argument("--nprocs", "--n-cpus", type=_positive_int, default=None,
                   help="processes run at once (default: number of CPUs)")
    g.add_argument("--omp-nthreads", type=_positive_int, default=None,
                   help="threads per process (default: min(nprocs, 8))")
    g.add_argument("--mem-gb", type=number_above(0), default=None,
                   help="memory available to the run, in GB (a number above 0)")
    g.add_argument("--use-plugin", type=Path, default=None,
                   help="Nipype plugin YAML file (plugin: SLURM, plugin_args: {...})")
    g.add_argument("--plugin", choices=["Linear", "MultiProc", "SLURM", "SLURMGraph", "SGE", "PBS"],
                   default=None,
                   help="Nipype execution plugin (default: MultiProc with --nprocs above 1, else Linear)")
    g.add_argument("--plugin-args", default=None, help="arguments for the plugin, e.g. sbatch arguments")
    g.add_argument("--allow-tmp-workdir", action="store_true",
                   help="allow a work dir under /tmp with a cluster plugin")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="training: start again instead of resuming from the last checkpoint")
    g.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0,
                   help="more log output: -v adds the libraries' messages (Nipype interfaces, pybids, "
                   "TensorFlow), -vv debug")
    return parser


def _load_config_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    if not path.is_file():
        parser.error(f"the config file {path} does not exist; give the path of a YAML or TOML file")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(path.read_text())
        if path.suffix.lower() in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
        elif path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        else:
            parser.error(f"the config file {path} must end in .yaml, .yml, .toml or .json")
    except Exception as err:  # noqa: BLE001 - any parse error is a usage error
        parser.error(f"the config file {path} could not be read ({err}); fix its syntax")
    if not isinstance(data, dict):
        parser.error(f"the config file {path} must hold a mapping of sections (vae, detector, ...)")
    return data


def check_model_dir(path: Path) -> str | None:
    """Return why ``path`` is not a model directory (model.json and its weights), or None."""
    spec = path / MODEL_SPEC
    if path.is_file():
        what = (f"it is the model description itself: pass its folder {path.parent} instead, or"
                if path.name == MODEL_SPEC else "a single weights or .keras file is not a model")
        return f"expected a model directory (with {MODEL_SPEC}) but {path} is a file; {what}"
    if not path.is_dir():
        broken = " (a broken symbolic link)" if path.is_symlink() else ""
        return f"the model directory {path} does not exist{broken}"
    if not spec.is_file():
        return f"the directory {path} holds no model ({MODEL_SPEC} is missing)"
    try:
        data = json.loads(spec.read_text())
        weights = path / data["weights"]
    except (ValueError, KeyError, TypeError):
        return f"{spec} is not a bids_lesionchange model description"
    if not weights.is_file():
        return f"the model in {path} has no weights file {weights.name}"
    return None


def verify_model_dir(path: Path) -> str | None:
    """Return why the model in ``path`` cannot be used, as one sentence with the fix, or None.

    Every file listed in ``model.json`` must match its recorded SHA-256 and the hyper-parameters
    must be valid, so a tampered or truncated model is refused before any subject is
    preprocessed, not at the ``predict`` step after all of them.
    """
    spec = path / MODEL_SPEC
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.model.io import hyperparams_from_dict, read_model_spec

    try:
        data = read_model_spec(path, verify=True)
    except InputError as err:
        return f"the model in {path} is not usable: {err.path}: {err.message}"
    try:
        hyperparams_from_dict(data["hyperparams"])
    except (KeyError, ValueError, TypeError) as err:
        return f"the model in {path} is not usable: {spec} has bad hyperparams ({err}); re-train the model"
    return None


def visible_cuda_devices() -> int | None:
    """Return how many CUDA devices PyTorch sees (in a child process), or None without PyTorch."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is None:
        return None
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return int(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return 0


def check_device(device: str) -> str | None:
    """Return why HD-BET cannot use ``device`` on this machine, or None when it can."""
    if device == "cpu":
        return None
    index = int(device[5:]) if device.startswith("cuda:") else 0
    count = visible_cuda_devices()
    if count is None:
        return (f"--device {device} needs PyTorch (HD-BET), which is not installed; "
                "use --device cpu or install the hdbet extra")
    if count == 0:
        return (f"--device {device}: PyTorch sees no CUDA GPU on this machine; use --device cpu "
                "(or run where a GPU is visible, e.g. singularity --nv / docker --gpus all)")
    if index >= count:
        return f"--device {device}: PyTorch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); pick one of them"
    return None


def _is_relative_to(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None):
    """Parse and check the command line; return a frozen :class:`~bids_lesionchange.config.Settings`."""
    from bids_lesionchange.config import Settings
    from bids_lesionchange.params import hyperparams_from_mapping

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parser.parse_args(argv)

    bids_dir = opts.bids_dir.expanduser().resolve()
    output_dir = opts.output_dir.expanduser().resolve()
    if not bids_dir.is_dir():
        parser.error(f"the BIDS directory {bids_dir} does not exist; give the root of a BIDS dataset")
    if not (bids_dir / "dataset_description.json").is_file():
        parser.error(
            f"{bids_dir} is not a BIDS dataset (no dataset_description.json); "
            "give the root of a BIDS dataset"
        )
    if output_dir == bids_dir or (
        _is_relative_to(output_dir, bids_dir)
        and not _is_relative_to(output_dir, bids_dir / "derivatives")
    ):
        parser.error(
            f"the output directory {output_dir} is inside the raw BIDS tree {bids_dir}; "
            f"use a folder outside it or under {bids_dir / 'derivatives'}"
        )

    mode = opts.mode or ("infer" if opts.analysis_level == "participant" else "train")
    allowed = {"participant": ("infer", "preprocess"), "group": ("train", "adapt", "evaluate", "summarise")}
    if mode not in allowed[opts.analysis_level]:
        parser.error(
            f"--mode {mode} does not go with the {opts.analysis_level} level; "
            f"use one of: {', '.join(allowed[opts.analysis_level])}"
        )

    for label in opts.participant_label:
        if not (bids_dir / f"sub-{label}").is_dir():
            parser.error(
                f"participant label '{label}' not found: {bids_dir / ('sub-' + label)} does not exist; "
                "check the label (see the sub-* folders)"
            )

    model_dir = None
    if opts.analysis_level == "participant" and mode == "infer" or mode == "adapt" or opts.model is not None:
        model_dir = (opts.model or DEFAULT_MODEL_DIR).expanduser().resolve()
        if not (opts.analysis_level == "group" and mode == "train"):
            problem = check_model_dir(model_dir)
            if problem:
                fix = (
                    "train one with 'group --mode train' or pass --model DIR"
                    if opts.model is None
                    else "pass --model with the directory written by 'group --mode train'"
                )
                parser.error(f"{problem}; {fix}")
            problem = verify_model_dir(model_dir)
            if problem:
                if opts.model is None:
                    problem += " (this is the model shipped in the package: reinstall bids_lesionchange)"
                parser.error(problem)

    if opts.device != "cpu" and opts.skull_strip in ("auto", "hdbet"):
        problem = check_device(opts.device)
        if problem:
            parser.error(problem)

    reference_dir = None
    if opts.reference_dir is not None:
        reference_dir = opts.reference_dir.expanduser().resolve()
        if not reference_dir.is_dir():
            parser.error(f"the reference directory {reference_dir} does not exist")

    if not 0.2 <= opts.output_resolution <= 4.0:
        parser.error(f"--output-resolution {opts.output_resolution} is outside 0.2-4.0 mm; use 1.0")

    overrides = _load_config_file(parser, opts.config) if opts.config else {}
    preset = overrides.pop("preset", opts.preset) if isinstance(overrides, dict) else opts.preset
    try:
        hyperparams = hyperparams_from_mapping(preset, overrides)
    except ValueError as err:
        parser.error(f"{opts.config or '--preset'}: {err}")

    work_dir = (opts.work_dir or output_dir.parent / "work-bids_lesionchange").expanduser().resolve()
    if _is_relative_to(work_dir, bids_dir) and not _is_relative_to(work_dir, bids_dir / "derivatives"):
        parser.error(f"the work directory {work_dir} is inside the BIDS dataset; choose another place")
    if _is_relative_to(work_dir, output_dir):
        parser.error(f"the work directory {work_dir} is inside the output directory {output_dir}: Nipype's "
                     "intermediate files (hundreds of MB per pair) would land among the derivatives; "
                     "pass -w with a folder outside it")

    use_plugin = None
    if opts.use_plugin is not None:
        use_plugin = opts.use_plugin.expanduser().resolve()
        if not use_plugin.is_file():
            parser.error(f"the plugin file {use_plugin} does not exist")
    from bids_lesionchange.cli.cluster import is_cluster_plugin, parse_plugin_args

    plugin_name = opts.plugin
    if use_plugin is not None:
        import yaml

        try:
            plugin_file = yaml.safe_load(use_plugin.read_text()) or {}
        except yaml.YAMLError as err:
            parser.error(f"the plugin file {use_plugin} is not YAML ({err}); fix its syntax")
        if not isinstance(plugin_file, dict) or not isinstance(plugin_file.get("plugin_args", {}), dict):
            parser.error(f"the plugin file {use_plugin} must hold 'plugin: NAME' and a 'plugin_args' mapping")
        plugin_name = plugin_file.get("plugin", "MultiProc")
    if opts.plugin_args:
        try:
            parse_plugin_args(opts.plugin or "MultiProc", opts.plugin_args)
        except ValueError as err:
            parser.error(str(err))
    cluster = is_cluster_plugin(plugin_name)
    if cluster and _is_relative_to(work_dir, Path("/tmp")) and not opts.allow_tmp_workdir:
        parser.error(
            f"the work directory {work_dir} is under /tmp, which cluster nodes do not share; "
            "pass --work-dir on a shared file system (or --allow-tmp-workdir to insist)"
        )

    nprocs = opts.nprocs or os.cpu_count() or 1
    omp = opts.omp_nthreads or min(nprocs, 8)

    return Settings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=opts.analysis_level,
        mode=mode,
        work_dir=work_dir,
        participant_label=tuple(opts.participant_label),
        session_label=tuple(opts.session_label),
        nochange_label=tuple(opts.nochange_label),
        nochange_column=opts.nochange_column,
        nochange_value=opts.nochange_value,
        self_pairs=opts.self_pairs,
        model_dir=model_dir,
        reference_dir=reference_dir,
        match=opts.match,
        nprocs=nprocs,
        omp_nthreads=omp,
        mem_gb=opts.mem_gb,
        skull_strip=opts.skull_strip,
        hdbet_mode=opts.hdbet_mode,
        hdbet_precision=opts.hdbet_precision,
        device=opts.device,
        threshold=opts.threshold,
        resolution=opts.output_resolution,
        min_blob_size=opts.min_blob_size,
        max_change_fraction=opts.max_change_fraction,
        adapt_steps=opts.adapt_steps,
        change_direction=opts.change_direction,
        extent_mm=opts.extent_mm,
        skip_bids_validation=opts.skip_bids_validation,
        write_native=opts.write_native,
        reports=opts.reports,
        plugin=opts.plugin,
        plugin_args=opts.plugin_args,
        use_plugin=use_plugin,
        allow_tmp_workdir=opts.allow_tmp_workdir,
        hyperparams=hyperparams,
        config_file=opts.config.resolve() if opts.config else None,
        resume=opts.resume,
        seed=opts.seed,
        command_line=tuple(["bids_lesionchange", *argv]),
        verbosity=opts.verbosity,
    )
