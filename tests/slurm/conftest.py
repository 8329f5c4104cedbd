"""A private single-node SLURM for the tests in this folder (skipped when SLURM is not installed).

The daemons are started once per session by ``scripts/slurm_local.sh`` in a throw-away directory
and stopped by their pid files at the end. Install SLURM with ``scripts/setup.sh`` (as root) or
``apt-get install -y --no-install-recommends slurm-wlm munge``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


@dataclass(frozen=True)
class LocalSlurm:
    """A running single-node SLURM: its directory and configuration file."""

    directory: Path
    conf: Path


def _why_no_slurm() -> str | None:
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): "
                "apt-get install -y --no-install-recommends slurm-wlm munge")
    if os.geteuid() != 0:
        return "a private SLURM needs root (slurmd runs jobs as their owner)"
    if not SLURM_LOCAL.is_file():
        return f"{SLURM_LOCAL} is missing"
    return None


@pytest.fixture(scope="session")
def local_slurm():
    """Start a single-node SLURM for the session; point ``SLURM_CONF`` at it; stop it afterwards."""
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="bids_lesionchange-slurm-", dir="/tmp"))
    env = {**os.environ, "PYTHON": shutil.which("python3") or "python3"}
    started = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(directory)], env=env,
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(directory)], capture_output=True,
                       timeout=60)
        pytest.skip(f"could not start a local SLURM: {started.stderr.strip()[-500:]}")
    saved = {key: os.environ.get(key) for key in ("SLURM_CONF", "LOGNAME")}
    os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
    os.environ.pop("LOGNAME", None)  # as in a container: the code under test must set it
    try:
        yield LocalSlurm(directory=directory, conf=directory / "slurm.conf")
    finally:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(directory)], capture_output=True,
                       timeout=60)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(directory, ignore_errors=True)
