"""Where the detector's forward pass spends its time: every layer, alone, at the 1 mm brain size.

Usage::

    python benchmarks/layers.py                        # the shipped model, 144 x 180 x 144
    python benchmarks/layers.py --model DIR --name layers_v8

The speed issue asks for inference at >= 50 % of the CPU's FP32 peak. This script says which
layers keep the whole pass below that: each layer of the trained model runs alone (one graph
function per layer, best of ``--repeats`` after a warm-up) on an input of the shape it sees in the
full pass (spatial side / 2^level; the siamese encoder's layers count twice). Reported per
layer: seconds, GFLOP (convolutions, counted analytically), GFLOP/s and the fraction of the CPU's
FP32 peak (``_common.cpu_description``). The same run measures, as the CPU's reachable rate, a
4096^2 float32 matrix product with NumPy and with TensorFlow, and one whole forward pass, so
the fractions are against figures from the same minutes on the same machine.

A layer measured alone misses what the whole graph shares (oneDNN reorders, fused bias and
ReLU, caches), so the sum of the layers is not the pass's time; the table shows where time goes.

The app runs the thin full-resolution convolutions as polyphase ones
(``bids_lesionchange.model.polyphase``): each such layer is also timed that way, the whole pass
is timed both ways (alternating, best of ``--repeats``), and a channel sweep (3x3x3
convolutions on the full-resolution grid with 4, 8 and 16 output channels) shows why: oneDNN
computes output channels in blocks of 16. Writes ``benchmarks/results/NAME.{json,md}``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL, checked_model, clock_note, command_line, cpu_description, machine, markdown_table, setup_logging, write_results  # noqa: E402,E501


def _level(name: str) -> tuple[int, int]:
    """(pyramid level of the layer's input, calls per pass) from the detector's layer names."""
    match = re.match(r"(enc|dec|ag|fuse|ds)(\d+)_?(.*)", name)
    if not match:
        return 0, 1
    kind, level, rest = match.group(1), int(match.group(2)), match.group(3)
    calls = 2 if kind == "enc" else 1  # the siamese encoder runs on both sessions
    if kind == "enc" and rest == "pool":
        return level - 1, calls
    if kind == "enc" and rest == "input_pool":
        return 0, calls
    if (kind == "dec" and rest == "up") or (kind == "ag" and rest in ("phi", "phi_up")):
        return level + 1, calls
    return level, calls


def _best(function, args, repeats: int) -> float:
    out = function(*args)
    _ = out.numpy() if hasattr(out, "numpy") else out
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        out = function(*args)
        _ = out.numpy() if hasattr(out, "numpy") else out
        best = min(best, time.perf_counter() - began)
    return best


def _gemm(repeats: int) -> dict:
    import numpy as np

    from bids_lesionchange.model._backend import tf

    n = 4096
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    flop = 2.0 * n ** 3
    numpy_s = _best(lambda x, y: x @ y, (a, b), repeats)
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    tf_s = _best(matmul, (tf.constant(a), tf.constant(b)), repeats)
    return {"numpy_gflops": round(flop / numpy_s / 1e9, 1), "tensorflow_gflops": round(flop / tf_s / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--shape", type=int, nargs=3, default=[144, 180, 144],
                        help="network input (the brain's box at 1 mm, a multiple of 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="layers")
    opts = parser.parse_args()
    setup_logging()
    model_dir = checked_model(parser, opts.model)

    import numpy as np

    from bids_lesionchange.model._backend import keras, tf
    from bids_lesionchange.model.inference import forward_function
    from bids_lesionchange.model.io import load_detector
    from bids_lesionchange.model.polyphase import PolyphaseConv3D, phases_of

    tf.get_logger().setLevel("ERROR")  # one graph function per layer is the point here, not a retracing bug
    tf.config.threading.set_intra_op_parallelism_threads(opts.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cpu = cpu_description()
    peak = cpu["fp32_peak_gflops"]
    model, spec = load_detector(model_dir)
    shape = tuple(opts.shape)
    multiple = int(spec["input_multiple"])
    if any(s % multiple for s in shape):
        parser.error(f"--shape must be multiples of {multiple}")

    def leaves(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from leaves(layer)
            elif not isinstance(layer, keras.layers.InputLayer):
                yield layer

    rows, total_s, total_flop = [], 0.0, 0.0
    for layer in leaves(model):
        inputs = layer._inbound_nodes[0].input_tensors
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        level, calls = _level(layer.name)
        side = tuple(s // 2 ** level for s in shape)
        args = [tf.random.uniform((1, *side, int(t.shape[-1]))) for t in inputs]
        function = tf.function(lambda *a, layer=layer: layer(list(a) if len(a) > 1 else a[0]))
        seconds = _best(function, args, opts.repeats) * calls
        flop = 0.0
        if isinstance(layer, keras.layers.Conv3DTranspose):
            flop = 2.0 * 8 * int(inputs[0].shape[-1]) * layer.filters * np.prod(side) * calls
        elif isinstance(layer, keras.layers.Conv3D):
            flop = 2.0 * np.prod(layer.kernel_size) * int(inputs[0].shape[-1]) * layer.filters * np.prod(side) * calls
        poly_s = None
        phases = phases_of(layer, multiple)  # as the app's graph runs the layer
        if phases > 1:
            wrapped = PolyphaseConv3D(layer, phases)
            poly_s = _best(tf.function(lambda a, wrapped=wrapped: wrapped(a)), args, opts.repeats) * calls
        total_s += seconds
        total_flop += flop
        rows.append({"layer": layer.name, "type": type(layer).__name__, "input": [*side, *(int(t.shape[-1]) for t in inputs)],
                     "calls": calls, "seconds": round(seconds, 4), "gflop": round(flop / 1e9, 2),
                     "gflops": round(flop / seconds / 1e9, 1) if flop else None,
                     "fraction_of_peak": round(flop / seconds / 1e9 / peak, 3) if flop else None,
                     "polyphase_seconds": round(poly_s, 4) if poly_s else None,
                     "polyphase_fraction_of_peak": round(flop / poly_s / 1e9 / peak, 3) if poly_s else None})
    x = [np.random.default_rng(1).random((1, *shape, int(t.shape[-1])), dtype=np.float32) for t in model.inputs]
    forward = {True: forward_function(model), False: forward_function(model, polyphase=False)}
    for function in forward.values():
        function(*x)  # trace both before timing either
    passes = {True: [], False: []}
    for _ in range(opts.repeats):  # alternating, so that a drift of the machine's speed hits both
        for polyphase, function in forward.items():
            passes[polyphase].append(_best(lambda *a: function(*a), x, 1))
    whole_s, plain_s = min(passes[True]), min(passes[False])
    gemm = _gemm(opts.repeats)
    sweep = []
    for filters in (4, 8, 16):  # 3x3x3 convolution, 4 input channels, full-resolution grid
        grid = tf.random.uniform((1, *shape, 4))
        kernel = tf.random.uniform((3, 3, 3, 4, filters))
        conv = tf.function(lambda a, k=kernel: tf.nn.relu(tf.nn.conv3d(a, k, [1] * 5, "SAME")))
        seconds = _best(conv, [grid], opts.repeats)
        flop = 2.0 * 27 * 4 * filters * np.prod(shape)
        sweep.append({"output_channels": filters, "seconds": round(seconds, 4),
                      "fraction_of_peak": round(flop / seconds / 1e9 / peak, 3)})
    rows.sort(key=lambda r: -r["seconds"])
    thin = [r for r in rows if r["gflop"] and r["gflops"] is not None and r["gflops"] < 0.25 * peak]
    summary = {
        "whole_pass_seconds": round(whole_s, 3), "whole_pass_gflops": round(total_flop / whole_s / 1e9, 1),
        "whole_pass_fraction_of_peak": round(total_flop / whole_s / 1e9 / peak, 3),
        "whole_pass_seconds_plain_graph": round(plain_s, 3),
        "whole_pass_fraction_of_peak_plain_graph": round(total_flop / plain_s / 1e9 / peak, 3),
        "whole_pass_seconds_each_round": {"polyphase": [round(v, 3) for v in passes[True]],
                                          "plain": [round(v, 3) for v in passes[False]]},
        "sum_of_layers_seconds": round(total_s, 3), "gflop_per_pass": round(total_flop / 1e9, 1),
        "sgemm_4096": gemm, "sgemm_fraction_of_peak": round(gemm["tensorflow_gflops"] / peak, 3),
        "seconds_in_layers_below_25pct_of_peak": round(sum(r["seconds"] for r in thin), 3),
        "seconds_in_layers_without_flops": round(sum(r["seconds"] for r in rows if not r["gflop"]), 3),
    }
    md = [f"# The detector's forward pass, layer by layer ({model_dir.name}, input {' x '.join(map(str, shape))})\n",
          f"Command: `{command_line()}`\n",
          f"CPU: {cpu['model']}, {cpu['cores']} cores, {', '.join(cpu['extensions'])}; FP32 peak {peak} GFLOP/s.\n",
          *([f"{note}\n"] if (note := clock_note([gemm["tensorflow_gflops"] / peak, gemm["numpy_gflops"] / peak],
                                                cpu)) else []),
          markdown_table(["measure", "value"], [
              ["whole pass, the app's graph (thin convolutions polyphase; one graph function, best of repeats)",
               f"{whole_s:.3f} s, {summary['whole_pass_gflops']} GFLOP/s, "
               f"{100 * summary['whole_pass_fraction_of_peak']:.1f} % of peak"],
              ["whole pass, plain Keras graph (the same rounds, alternating)",
               f"{plain_s:.3f} s, {total_flop / plain_s / 1e9:.1f} GFLOP/s, "
               f"{100 * summary['whole_pass_fraction_of_peak_plain_graph']:.1f} % of peak; "
               f"polyphase / plain {whole_s / plain_s:.2f}"],
              ["4096^2 float32 matrix product, TensorFlow / NumPy (the CPU's reachable rate)",
               f"{gemm['tensorflow_gflops']} / {gemm['numpy_gflops']} GFLOP/s ({100 * summary['sgemm_fraction_of_peak']:.0f} % of peak)"],
              ["sum of the layers run alone", f"{total_s:.3f} s for {summary['gflop_per_pass']} GFLOP"],
              ["layers below 25 % of peak (thin or dilated convolutions)", f"{summary['seconds_in_layers_below_25pct_of_peak']:.3f} s"],
              ["layers without FLOPs (concatenations, gates, pooling, up-sampling)", f"{summary['seconds_in_layers_without_flops']:.3f} s"],
          ]),
          "## Output channels: a 3x3x3 convolution with 4 input channels on the full-resolution grid\n",
          markdown_table(["output channels", "s", "% of peak"],
                         [[r["output_channels"], f"{r['seconds']:.3f}", f"{100 * r['fraction_of_peak']:.0f}"] for r in sweep]),
          "\n## Every layer, slowest first (polyphase: as the app runs it)\n",
          markdown_table(["layer", "type", "input (X, Y, Z, channels...)", "calls", "s", "GFLOP", "GFLOP/s", "% of peak",
                          "polyphase s", "polyphase % of peak"],
                         [[r["layer"], r["type"], " x ".join(map(str, r["input"])), r["calls"], f"{r['seconds']:.3f}",
                           r["gflop"] or "", r["gflops"] or "", f"{100 * r['fraction_of_peak']:.0f}" if r["fraction_of_peak"] else "",
                           f"{r['polyphase_seconds']:.3f}" if r["polyphase_seconds"] else "",
                           f"{100 * r['polyphase_fraction_of_peak']:.0f}" if r["polyphase_fraction_of_peak"] else ""]
                          for r in rows])]
    write_results(opts.name, {"command": command_line(), "machine": machine(), "model": str(model_dir),
                              "shape": list(shape), "summary": summary, "channel_sweep": sweep, "layers": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
