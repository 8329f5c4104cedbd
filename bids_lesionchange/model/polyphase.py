"""Thin convolutions computed several output slices at a time (inference only; same function).

oneDNN, TensorFlow's CPU convolution library, computes output channels in blocks of 16 (8 with
AVX2), so a 3x3x3 convolution with 4 or 8 output channels costs about as much as one with 16
(``benchmarks/layers.py``, channel sweep): the full-resolution layers of the detector, which have
4 or 8 output channels, run at 14-57 % of the CPU's FP32 peak. :func:`polyphase_model` fills those
blocks: a convolution with ``c`` output channels is computed as one convolution with
``s * c`` output channels and stride ``s`` along the last spatial axis, output channel
``p * c + k`` being channel ``k`` of slice ``s * j + p``. Its kernel holds the original one ``s``
times, each copy shifted by one slice (``2 * dilation + s`` taps along that axis instead of
``3 s``), and a reshape, free in channels-last memory, puts the slices back in order. Same
weights, same arithmetic per output value (the zero taps add exact zeros); oneDNN may order the
floating-point sums differently for some shapes (maps within 0.00005 on real pairs).

The last spatial side of every input must be a multiple of the phase count ``s`` at each layer's
level; :func:`bids_lesionchange.model.inference.predict_change` pads to ``input_multiple``, which
guarantees it.
"""

from __future__ import annotations

import re

import numpy as np

from bids_lesionchange.model._backend import keras

#: Output channels oneDNN computes together: a layer with fewer gets ``BLOCK // filters`` phases.
BLOCK = 16

_LEVEL = re.compile(r"^(?:enc|dec|ag)(\d+)_")


def phases_for(filters: int, kernel: tuple[int, ...], strides: tuple[int, ...], level_multiple: int) -> int:
    """Return the number of output slices to compute together for one convolution (1: leave it).

    ``level_multiple``: the number the layer's input's last side is always a multiple of.
    """
    if tuple(kernel) != (3, 3, 3) or tuple(strides) != (1, 1, 1) or filters >= BLOCK:
        return 1
    phases = 1
    while phases * 2 * filters <= BLOCK and level_multiple % (phases * 2) == 0:
        phases *= 2
    return phases


def phases_of(layer, input_multiple: int) -> int:
    """Return the phases :func:`polyphase_model` gives a layer of the detector (1: it stays as it is).

    Only 3x3x3 ``Conv3D`` layers with "same" padding whose name gives their level (``enc1_...``:
    inputs at level 1 have last sides that are multiples of ``input_multiple / 2``).
    """
    if not isinstance(layer, keras.layers.Conv3D) or isinstance(layer, keras.layers.Conv3DTranspose):
        return 1
    match = _LEVEL.match(layer.name)
    if not match or getattr(layer, "groups", 1) != 1 or layer.padding != "same":
        return 1
    multiple = max(int(input_multiple) // 2 ** int(match.group(1)), 1)
    return phases_for(layer.filters, layer.kernel_size, layer.strides, multiple)


def phase_placement(phases: int, dilation: int) -> np.ndarray:
    """Return P (phases, 3, taps): P[p, t, u] = 1 where tap t of output phase p reads input tap u."""
    taps = 2 * dilation + phases
    placement = np.zeros((phases, 3, taps), dtype=np.float32)
    for p in range(phases):
        for t in range(3):
            placement[p, t, p + dilation * t] = 1.0
    return placement


class PolyphaseConv3D(keras.layers.Layer):
    """Compute a built ``Conv3D`` (3x3x3, stride 1, "same") ``phases`` slices at a time.

    The original layer's variables are read at every call (no copy), so the result follows them.
    """

    def __init__(self, conv, phases: int, **kwargs):
        super().__init__(name=f"{conv.name}_polyphase", dtype=conv.dtype_policy, **kwargs)
        self.conv = conv
        self.phases = int(phases)
        self.dilation = int(conv.dilation_rate[0])
        if len(set(conv.dilation_rate)) != 1:
            raise ValueError(f"{conv.name}: polyphase needs one dilation rate for all axes")
        self.placement = phase_placement(self.phases, self.dilation)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.conv.filters)

    def call(self, inputs):
        from bids_lesionchange.model._backend import tf

        conv, phases, d = self.conv, self.phases, self.dilation
        kernel = tf.cast(conv.kernel, inputs.dtype)
        placement = tf.constant(self.placement, dtype=kernel.dtype)
        # (a, b, t, in, out) x (p, t, u) -> (a, b, u, in, p, out): phase p's copy shifted by p slices
        wide = tf.einsum("ptu,abtio->abuipo", placement, kernel)
        shape = tf.shape(wide)
        wide = tf.reshape(wide, [shape[0], shape[1], shape[2], shape[3], phases * conv.filters])
        out = tf.nn.conv3d(inputs, wide, strides=[1, 1, 1, phases, 1], padding="SAME",
                           dilations=[1, d, d, 1, 1])
        if conv.use_bias:
            out = out + tf.tile(tf.cast(conv.bias, out.dtype), [phases])
        if conv.activation is not None:
            out = conv.activation(out)
        size = tf.shape(inputs)
        return tf.reshape(out, [size[0], size[1], size[2], size[3], conv.filters])


def polyphase_model(model, input_multiple: int):
    """Return a model computing what ``model`` computes, its thin convolutions as polyphase ones.

    Layers are shared with ``model`` (no weights copied); which layers change, and how:
    :func:`phases_of`. Models without a thin 3x3x3 convolution come back unchanged.
    """
    replaced = []

    def clone(layer):
        phases = phases_of(layer, input_multiple)
        if phases > 1:
            replaced.append(layer.name)
            return PolyphaseConv3D(layer, phases)
        return layer

    rebuilt = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not replaced:
        return model
    rebuilt.polyphase_layers = tuple(replaced)
    return rebuilt


def model_input_multiple(model) -> int:
    """Return 2 ** (deepest level named in ``model``): what its inputs' sides must be multiples of."""
    deepest = 0

    def walk(m):
        nonlocal deepest
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            match = _LEVEL.match(layer.name)
            if match:
                deepest = max(deepest, int(match.group(1)))

    walk(model)
    return 2**deepest
