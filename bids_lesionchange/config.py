"""Settings of one run: a frozen object built once by the CLI parser, written to ``<out>/logs/``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.atomic import atomic_write_json
from bids_lesionchange.params import HyperParams


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know; built by :func:`bids_lesionchange.cli.parser.parse_args`."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str  # "participant" or "group"
    mode: str  # participant: "infer" | "preprocess"; group: "train" | "adapt" | "evaluate" | "summarise"
    work_dir: Path
    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    nochange_label: tuple[str, ...] = ()
    nochange_column: str = "group"
    nochange_value: str = "NoChange"
    model_dir: Path | None = None
    reference_dir: Path | None = None
    match: str = "iou"  # lesion matching: "iou" (IoU >= 0.01), "overlap" (any voxel) or "msseg2" (Anima)
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    skull_strip: str = "auto"  # "auto" | "hdbet" | "threshold" | "none"
    hdbet_mode: str = "fast"  # "fast" (1 fold, no TTA) | "accurate" (5 folds + TTA)
    hdbet_precision: str = "auto"  # "auto" (bfloat16 where the CPU has it natively) | "float32" | "bfloat16"
    device: str = "cpu"
    threshold: float = 0.1
    resolution: float = 1.0
    # None: the model's own (model.json); group --mode train: the hyper-parameters'.
    intensity_norm: str | None = None
    self_pairs: int = 0  # group --mode train: simulated rescan pairs per NoChange subject
    min_blob_size: int = 20
    adapt_steps: int = 0  # participant: fine-tune a copy of the model on the pair's own sessions first
    max_change_fraction: float = MAX_PLAUSIBLE_FRACTION  # above it a pair is flagged out of domain
    change_direction: str = "increase"  # "increase" (follow-up brighter only) | "any" (the paper)
    extent_mm: float = 0.0  # grow each change into the new hyperintensity around it (0: off)
    skip_bids_validation: bool = False
    write_native: bool = True
    reports: bool = True
    plugin: str | None = None
    plugin_args: str | None = None
    use_plugin: Path | None = None
    allow_tmp_workdir: bool = False
    hyperparams: HyperParams = field(default_factory=HyperParams)
    config_file: Path | None = None
    resume: bool = True
    seed: int = 0
    command_line: tuple[str, ...] = ()
    verbosity: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary of every setting."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, HyperParams):
                value = value.to_dict()
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def write(self, log_dir: Path, run_uuid: str) -> Path:
        """Write the settings as JSON to ``log_dir/settings-<run_uuid>.json`` atomically."""
        return atomic_write_json(log_dir / f"settings-{run_uuid}.json", self.to_dict(), sort_keys=True)
