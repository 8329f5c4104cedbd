"""The atomic writers: content, permissions, no temporary file left on success or on an error."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.atomic import (
    FILE_MODE, atomic_copy, atomic_path, atomic_save, atomic_write_bytes, atomic_write_json,
    atomic_write_nifti, atomic_write_text,
)


class Boom(Exception):
    pass


def _only(folder, name):
    """``folder`` holds ``name`` and nothing else (no temporary file)."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


def _mode(path):
    return path.stat().st_mode & 0o777


def test_bytes_text_and_copy(tmp_path):
    out = atomic_write_bytes(tmp_path / "new" / "a.bin", b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01" and _mode(out) == FILE_MODE
    _only(out.parent, "a.bin")
    text = atomic_write_text(tmp_path / "t" / "b.txt", "é\r\nx")  # no newline translation, UTF-8
    assert text.read_bytes() == "é\r\nx".encode("utf-8") and _mode(text) == FILE_MODE
    copy = atomic_copy(out, tmp_path / "c" / "a.bin")
    assert copy.read_bytes() == b"\x00\x01" and _mode(copy) == FILE_MODE
    _only(copy.parent, "a.bin")


def test_json_keeps_or_sorts_the_keys(tmp_path):
    data = {"b": 1, "a": [1.5, None], "path": tmp_path}
    path = atomic_write_json(tmp_path / "x.json", data)
    assert path.read_text() == json.dumps({**data, "path": str(tmp_path)}, indent=2) + "\n"
    atomic_write_json(path, data, sort_keys=True)
    assert list(json.loads(path.read_text())) == ["a", "b", "path"]
    assert _mode(path) == FILE_MODE
    _only(tmp_path, "x.json")


def test_nifti_from_data_and_affine_or_an_image(tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 1]
    data = np.arange(24).reshape(2, 3, 4)
    path = atomic_write_nifti(tmp_path / "a.nii.gz", data, affine, dtype=np.int16)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16 and np.array_equal(np.asarray(img.dataobj), data)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert np.allclose(img.affine, affine) and _mode(path) == FILE_MODE
    again = atomic_write_nifti(tmp_path / "b.nii.gz", img)
    assert again.read_bytes() == path.read_bytes()  # gzip without time stamp or temporary name
    with pytest.raises(ValueError, match="dtype"):
        atomic_write_nifti(tmp_path / "c.nii.gz", img, dtype=np.uint8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_save_passes_a_name_ending_like_the_destination(tmp_path):
    seen = []

    def writer(name):
        seen.append(name)
        np.savez(name, x=np.ones(3))  # np.savez would append .npz to any other name

    path = atomic_save(writer, tmp_path / "state.npz")
    assert isinstance(seen[0], str) and seen[0].endswith("state.npz")
    with np.load(path) as saved:
        assert np.array_equal(saved["x"], np.ones(3))
    assert _mode(path) == FILE_MODE
    _only(tmp_path, "state.npz")


def _half_then_fail(name):
    with open(name, "w") as handle:
        handle.write("half")
    raise Boom()


@pytest.mark.parametrize("write", [
    lambda p: atomic_save(_half_then_fail, p),
    lambda p: atomic_write_nifti(p, object()),  # nibabel cannot save it
    lambda p: atomic_write_json(p, {1j: 1}),  # a complex key: TypeError before anything is written
])
def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, write):
    path = tmp_path / "out.nii.gz"
    path.write_bytes(b"old")
    with pytest.raises(Exception):
        write(path)
    assert path.read_bytes() == b"old"
    _only(tmp_path, "out.nii.gz")


def test_atomic_path_removes_its_temporary_on_error_and_on_keyboard_interrupt(tmp_path):
    for error in (Boom, KeyboardInterrupt):
        with pytest.raises(error):
            with atomic_path(tmp_path / "x.txt") as tmp:
                assert tmp.parent == tmp_path and tmp.name.endswith("x.txt") and tmp.is_file()
                tmp.write_text("half")
                raise error()
        assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_no_half_written_file_at_the_destination(tmp_path):
    """A process killed while writing leaves the destination as it was (its temporary stays)."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")
    code = ("import os, sys\n"
            "from bids_lesionchange.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half')\n"
            "    os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code, str(path)]).returncode == 9
    assert path.read_bytes() == b"old"


def test_the_module_imports_nothing_heavy():
    code = ("import sys, bids_lesionchange.atomic; "
            "print(sorted(m for m in ('nibabel', 'numpy', 'tensorflow', 'nipype') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
