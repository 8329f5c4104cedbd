"""The change detector: a (siamese) 3D U-net with inception blocks, attention gates, multiscale
inputs and deep supervision (To et al. 2021, Fig. 2).

The network is fully convolutional and channels-last: spatial dimensions are ``None``, so one
model runs on training crops and on whole brains whose sides are multiples of
``input_multiple(params)``. Only standard Keras layers are used (no Lambda), so a model is
rebuilt from its hyper-parameters and only weights are ever loaded.

Design choices measured on a 2-core CPU (see benchmarks/): no BatchNorm (2.4x slower inference
unless folded; GroupNorm is selectable), transposed convolutions for up-sampling (they also halve
the channels before the skip concatenation), inception modules with two wide branches and a
single concatenation rather than four thin ones (thin 1x1x1 branches run at 4-24 GFLOP/s against
60-116 for wide 3x3x3 convolutions).
"""

from __future__ import annotations

from bids_lesionchange.model._backend import keras
from bids_lesionchange.params import DetectorParams

layers = keras.layers

ARCHITECTURES = ("siamese", "unet")


def input_multiple(params: DetectorParams) -> int:
    """Return the number every spatial side of an input must be a multiple of."""
    return 2 ** (params.levels - 1)


def level_channels(params: DetectorParams, level: int) -> int:
    """Return the number of feature channels of the encoder at ``level`` (0 = full resolution)."""
    return params.base_filters * 2**level


class _Builder:
    """Create named layers with the detector's shared settings (regulariser, normalisation)."""

    def __init__(self, params: DetectorParams, prefix: str = ""):
        self.params = params
        self.prefix = prefix
        self.regularizer = keras.regularizers.L2(params.l2) if params.l2 > 0 else None

    def name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def conv(self, x, filters: int, kernel: int, name: str, *, dilation: int = 1, activate: bool = True):
        use_norm = activate and self.params.normalization == "group"
        x = layers.Conv3D(
            filters, kernel, padding="same", dilation_rate=dilation,
            activation="relu" if activate and not use_norm else None,
            use_bias=not use_norm, kernel_regularizer=self.regularizer, name=self.name(name),
        )(x)
        if use_norm:
            x = layers.GroupNormalization(groups=min(4, filters), name=self.name(name + "_gn"))(x)
            x = layers.Activation("relu", name=self.name(name + "_relu"))(x)
        return x

    def block(self, x, filters: int, name: str):
        """Two convolutions, the first an inception module when ``params.inception``."""
        if self.params.inception:
            half = max(filters // 2, 1)
            wide = self.conv(x, half, 3, f"{name}_inc3")
            reduced = self.conv(x, half, 1, f"{name}_inc_reduce")
            dilated = self.conv(reduced, half, 3, f"{name}_inc5", dilation=2)  # 5x5x5 field of view
            x = layers.Concatenate(name=self.name(f"{name}_inc_concat"))([wide, dilated])
        else:
            x = self.conv(x, filters, 3, f"{name}_conv1")
        return self.conv(x, filters, 3, f"{name}_conv2")


def _encoder(params: DetectorParams, channels: int, name: str, spatial_shape=(None, None, None)) -> keras.Model:
    """Return the encoder as a model mapping an image to its feature maps at every level."""
    build = _Builder(params)
    image = keras.Input(shape=(*spatial_shape, channels), name=f"{name}_input")
    features = []
    x = build.block(image, level_channels(params, 0), "enc0")
    features.append(x)
    for level in range(1, params.levels):
        x = layers.MaxPooling3D(2, name=f"enc{level}_pool")(x)
        if params.multiscale_inputs:
            scaled = layers.AveragePooling3D(2**level, name=f"enc{level}_input_pool")(image)
            x = layers.Concatenate(name=f"enc{level}_multiscale")([x, scaled])
        x = build.block(x, level_channels(params, level), f"enc{level}")
        features.append(x)
    return keras.Model(image, features, name=name)


def _attention_gate(build: _Builder, skip, gating, level: int):
    """Return the skip features weighted by an additive attention gate (Oktay/Schlemper et al.)."""
    inter = max(level_channels(build.params, level) // 2, 4)
    theta = layers.Conv3D(inter, 1, use_bias=False, kernel_regularizer=build.regularizer,
                          name=f"ag{level}_theta")(skip)
    phi = layers.Conv3D(inter, 1, kernel_regularizer=build.regularizer, name=f"ag{level}_phi")(gating)
    phi = layers.UpSampling3D(2, name=f"ag{level}_phi_up")(phi)
    joint = layers.Activation("relu", name=f"ag{level}_relu")(layers.Add(name=f"ag{level}_add")([theta, phi]))
    coefficients = layers.Conv3D(1, 1, activation="sigmoid", kernel_regularizer=build.regularizer,
                                 name=f"ag{level}_psi")(joint)
    return layers.Multiply(name=f"ag{level}_gate")([skip, coefficients])


def build_detector(params: DetectorParams, spatial_shape: tuple = (None, None, None)) -> keras.Model:
    """Build the change detector described by ``params`` (untrained).

    Parameters
    ----------
    params : DetectorParams
        ``architecture`` "siamese": inputs ``x1`` = (follow-up, |follow-up - baseline|) and
        ``x2`` = (baseline, |follow-up - baseline|), each (batch, X, Y, Z, 2), encoded by one
        shared-weight encoder whose features are concatenated at every level. ``"unet"``: one
        input ``x`` = (follow-up, baseline), (batch, X, Y, Z, 2).
    spatial_shape : tuple of 3 ints or None
        Fixed input sides (only to count FLOPs per layer); the default ``None`` accepts any shape.

    Returns
    -------
    keras.Model
        Outputs: the final change probability (batch, X, Y, Z, 1) first, then, with deep
        supervision, one full-resolution probability per intermediate decoder level.
    """
    if params.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{params.architecture}'; choose one of {ARCHITECTURES}")
    if params.levels < 2:
        raise ValueError("detector.levels must be at least 2")
    if params.normalization not in ("none", "group"):
        raise ValueError(f"unknown normalization '{params.normalization}'; choose none or group")
    build = _Builder(params)
    if params.architecture == "siamese":
        inputs = [keras.Input(shape=(*spatial_shape, 2), name=n) for n in ("x1", "x2")]
        encoder = _encoder(params, 2, "encoder", spatial_shape)
        feats_1, feats_2 = encoder(inputs[0]), encoder(inputs[1])
        skips = [layers.Concatenate(name=f"fuse{level}")([a, b])
                 for level, (a, b) in enumerate(zip(feats_1, feats_2))]
    else:
        inputs = [keras.Input(shape=(*spatial_shape, 2), name="x")]
        skips = list(_encoder(params, 2, "encoder", spatial_shape)(inputs[0]))

    x = skips[-1]
    auxiliary = []
    for level in range(params.levels - 2, -1, -1):
        filters = level_channels(params, level)
        skip = skips[level]
        if params.attention_gates:
            skip = _attention_gate(build, skip, x, level)
        up = layers.Conv3DTranspose(filters, 2, strides=2, activation="relu",
                                    kernel_regularizer=build.regularizer, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([up, skip])
        x = build.block(x, filters, f"dec{level}")
        if params.deep_supervision and level > 0:
            aux = layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name=f"ds{level}_out")(x)
            auxiliary.append(layers.UpSampling3D(2**level, name=f"ds{level}_up")(aux))
    final = layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="change")(x)
    outputs = [final] + auxiliary[::-1]
    name = f"{params.architecture}_change_detector"
    return keras.Model(inputs, outputs if len(outputs) > 1 else final, name=name)


def inference_model(model: keras.Model) -> keras.Model:
    """Return a model computing only the final output (deep-supervision heads are pruned)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=f"{model.name}_final")


def detector_inputs(followup, baseline, architecture: str):
    """Return the network inputs (list of arrays, channels-last) for follow-up/baseline volumes.

    Arrays of shape (batch, X, Y, Z). Siamese: [(x, |x - x^|), (x^, |x - x^|)]; unet: [(x, x^)].
    """
    import numpy as np

    followup = np.asarray(followup, dtype=np.float32)
    baseline = np.asarray(baseline, dtype=np.float32)
    if architecture == "siamese":
        diff = np.abs(followup - baseline)
        return [np.stack([followup, diff], axis=-1), np.stack([baseline, diff], axis=-1)]
    return [np.stack([followup, baseline], axis=-1)]


def forward_flops(params: DetectorParams, spatial_shape: tuple[int, int, int], final_only: bool = False) -> int:
    """Count the floating-point operations (2 per multiply-add) of one forward pass of one sample.

    Convolutions only (they are > 95 % of the work); the shared siamese encoder is counted once
    per branch. ``final_only`` leaves out the deep-supervision heads (as at inference).
    """
    model = build_detector(params, spatial_shape)
    total = 0

    def count(layer, calls: int):
        nonlocal total
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                count(inner, calls * (2 if layer.name == "encoder" and params.architecture == "siamese" else 1))
            return
        if final_only and layer.name.startswith("ds"):
            return
        if isinstance(layer, layers.Conv3DTranspose):
            voxels = int(np.prod(layer.input.shape[1:4]))
            total += calls * 2 * voxels * int(np.prod(layer.kernel_size)) * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, layers.Conv3D):
            voxels = int(np.prod(layer.output.shape[1:4]))
            total += calls * 2 * voxels * int(np.prod(layer.kernel_size)) * layer.input.shape[-1] * layer.filters

    import numpy as np

    for layer in model.layers:
        count(layer, 1)
    return int(total)
