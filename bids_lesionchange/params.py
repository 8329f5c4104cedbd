"""Hyper-parameters of the VAE, SuperMix and the change detector (pure dataclasses, no TensorFlow).

Two presets: ``cpu`` (sized for a 2-core machine, the default) and ``paper`` (To et al. 2021,
section 4, for a GPU). Any field can be overridden by a ``--config`` YAML/TOML file with the
sections ``vae``, ``supermix``, ``detector`` and ``training``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class VAEParams:
    """Architecture and training of the VAE that makes the reconstructions SuperMix mixes in."""

    crop_shape: tuple[int, int, int] = (64, 64, 16)
    base_filters: int = 8
    levels: int = 3
    latent_channels: int = 8
    pooling: str = "maxpool"  # "maxpool" (the paper's choice) or "strided"
    kl_weight: float = 1e-3
    delta: float = 5.0  # latent perturbation z * U(-delta, delta)
    learning_rate: float = 5e-5
    iterations: int = 20
    crops_per_iteration: int = 64
    batch_size: int = 2


@dataclass(frozen=True)
class SuperMixParams:
    """SuperMix: SLIC superpixels kept with probability tau, else replaced by the VAE output."""

    tau: float = 0.98
    n_segments_min: int = 200
    n_segments_max: int = 5000
    compactness: float = 0.1
    min_label_voxels: int = 0
    slic_downsample: int = 2  # SLIC runs on a grid this many times coarser (1 = full resolution)
    slic_iterations: int = 10
    # Lesion-like SuperMix (an extension of the paper, off by default): in this share of the
    # samples a few lesion-sized superpixels (SLIC with a whole-brain count drawn log-uniformly in
    # lesion_segments_min..max) take the VAE texture raised to lesion_contrast_min..max times the
    # crop's tissue level, with a soft partial-volume edge: new hyperintensities, the change MS
    # produces, instead of a reconstruction that differs from x only in its texture.
    lesion_fraction: float = 0.0
    lesion_segments_min: int = 3000
    lesion_segments_max: int = 30000
    lesion_contrast_min: float = 1.2
    lesion_contrast_max: float = 2.0
    max_lesions: int = 4
    # share of the lesion-like changes placed against a hyperintensity already in the crop (an
    # enlarging lesion: only the rim that rose is labelled)
    lesion_enlarging_fraction: float = 0.0
    # > 0: each chosen superpixel is cut to a ball of radius U(lesion_radius_min, _max) voxels
    # around one of its voxels, so lesions smaller than a superpixel (20-70 voxels) are drawn too
    lesion_radius_min: float = 1.5
    lesion_radius_max: float = 0.0
    # > 0: a lesion is centred at least this many voxels inside the brain mask (not on the brain's
    # outer edge, where a brighter rim is registration or skull-strip nuisance, not MS)
    lesion_min_depth: float = 0.0
    # share of the lesion-like samples that grow a hyperintensity already in the crop instead
    # (:func:`bids_lesionchange.synth.supermix.grow_lesions`): a rim of 1-3 voxels on part of its
    # border takes the lesion's own brightness, as an enlarging MS lesion does
    lesion_growth_fraction: float = 0.0


@dataclass(frozen=True)
class DetectorParams:
    """Architecture and loss of the change detector (siamese 3D U-net by default)."""

    architecture: str = "siamese"  # "siamese" or "unet" (two-channel, not siamese)
    base_filters: int = 8
    levels: int = 3
    inception: bool = True
    attention_gates: bool = True
    multiscale_inputs: bool = True
    deep_supervision: bool = True
    loss: str = "focal_tversky"  # "focal_tversky" or "bce"
    alpha: float = 0.75
    gamma_final: float = 1.0
    gamma_intermediate: float = 0.75
    l2: float = 1e-6
    normalization: str = "none"  # "none" or "group" (GroupNorm; BatchNorm is not offered: slow at CPU inference)
    deep_supervision_weight: float = 0.5  # weight of each intermediate output's loss (final output: 1)


@dataclass(frozen=True)
class TrainingParams:
    """Optimisation schedule of the detector."""

    crop_shape: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    iterations: int = 40
    pairs_per_iteration: int = 20
    learning_rate: float = 2e-4
    decay: float = 1e-3
    validation_fraction: float = 0.2
    validation_crops: int = 6
    swap_sessions: bool = True  # also train with baseline and follow-up roles exchanged
    min_brain_fraction: float = 0.25  # a training crop holds at least this fraction of brain voxels
    # Unlabelled nuisance on one session of most samples: a smooth multiplicative field of up to
    # +-this fraction and a gamma of up to exp(+-this), so residual bias and contrast differences
    # between scans are not read as change (0: off, the paper's setting).
    intensity_augmentation: float = 0.1
    # Unlabelled acquisition nuisance on each crop (independent noise, blur or one thick-slice
    # protocol with its own slice offsets, a sub-voxel shift of the reference): up to this noise
    # sigma; 0: off (the paper's setting and the default: with it and self-pairs a model stopped
    # detecting lesions, see docs/benchmarks.md).
    acquisition_augmentation: float = 0.0
    # How preprocessing maps intensities to [0, 1] for this model: "percentile" (the paper's 0-99th,
    # the default) or "wm-peak" (white-matter peak at 0.5; not yet shown to detect better).
    intensity_normalisation: str = "percentile"
    threshold: float = 0.1  # kappa of the paper, for the validation Dice and lesion counts
    min_blob_size: int = 20
    # > 0: the model written is an exponential moving average of the weights with this decay per
    # step (validation uses it too); 0 = the last weights, as in the paper
    weight_averaging: float = 0.0
    graph_mode: bool = True  # compile training steps with tf.function (tracing costs 10-30 s; False for tiny runs)
    seed: int = 0


@dataclass(frozen=True)
class HyperParams:
    """All hyper-parameters of one training run."""

    preset: str = "cpu"
    vae: VAEParams = field(default_factory=VAEParams)
    supermix: SuperMixParams = field(default_factory=SuperMixParams)
    detector: DetectorParams = field(default_factory=DetectorParams)
    training: TrainingParams = field(default_factory=TrainingParams)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)


PRESETS: dict[str, HyperParams] = {
    "cpu": HyperParams(),
    "paper": HyperParams(
        preset="paper",
        vae=VAEParams(
            crop_shape=(192, 192, 16), base_filters=16, levels=4, latent_channels=16,
            iterations=200, crops_per_iteration=4096, batch_size=2,
        ),
        detector=DetectorParams(base_filters=16, levels=4, l2=1e-6, gamma_final=1.0),
        training=TrainingParams(
            crop_shape=(192, 192, 16), batch_size=2, iterations=60, pairs_per_iteration=100,
            validation_crops=16, intensity_augmentation=0.0,
        ),
    ),
}


def _coerce_number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int and not (isinstance(value, int) or float(value).is_integer()):
        raise ValueError(f"expected a whole number, got {value!r}")
    return kind(value)


def _coerce(value: Any, current: Any) -> Any:
    if isinstance(current, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError(f"expected a list of {len(current)} numbers, got {value!r}")
        value = list(value)
        if len(value) != len(current):
            raise ValueError(f"expected a list of {len(current)} numbers, got {value!r}")
        return tuple(_coerce_number(v, type(current[0])) for v in value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true/false, got {value!r}")
        return value
    if isinstance(current, (int, float)):
        return _coerce_number(value, type(current))
    return type(current)(value)


def _override(obj: Any, section: str, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown hyper-parameter '{section}.{key}'; known: {', '.join(sorted(known))}"
            )
        try:
            changes[key] = _coerce(value, getattr(obj, key))
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"bad value for '{section}.{key}': {err}") from None
    return replace(obj, **changes)


def hyperparams_from_mapping(preset: str = "cpu", overrides: Mapping[str, Any] | None = None) -> HyperParams:
    """Build hyper-parameters from a preset name and a nested mapping of overrides.

    Raises ``ValueError`` with a sentence naming the unknown key or bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    params = PRESETS[preset]
    overrides = dict(overrides or {})
    changes = {}
    for section in ("vae", "supermix", "detector", "training"):
        if section in overrides:
            values = overrides.pop(section)
            if not isinstance(values, Mapping):
                raise ValueError(f"section '{section}' must be a table of key = value")
            changes[section] = _override(getattr(params, section), section, values)
    if overrides:
        raise ValueError(
            f"unknown section(s) {', '.join(sorted(overrides))}; "
            "known: vae, supermix, detector, training"
        )
    result = replace(params, **changes)
    validate_hyperparams(result)
    return result


# Allowed values of every hyper-parameter, checked when a config (or a model.json) is read so that
# a bad value is refused with its key before any preprocessing: key -> (low, high, low_open,
# high_open) for numbers (None: unbounded; every side of a tuple is checked), or a tuple of choices.
# A key absent from the dataclasses is skipped, so the table may name fields of newer versions.
_ANY = (None, None, False, False)
_AT_LEAST_0 = (0, None, False, False)
_AT_LEAST_1 = (1, None, False, False)
_POSITIVE = (0, None, True, False)
_UNIT = (0, 1, False, False)
RANGES: dict[str, tuple] = {
    "vae.crop_shape": _AT_LEAST_1,
    "vae.base_filters": _AT_LEAST_1,
    "vae.levels": _AT_LEAST_1,
    "vae.latent_channels": _AT_LEAST_1,
    "vae.pooling": ("maxpool", "strided"),
    "vae.kl_weight": _AT_LEAST_0,
    "vae.delta": _AT_LEAST_0,
    "vae.learning_rate": _POSITIVE,
    "vae.iterations": _AT_LEAST_0,
    "vae.crops_per_iteration": _AT_LEAST_1,
    "vae.batch_size": _AT_LEAST_1,
    "supermix.tau": _UNIT,
    "supermix.n_segments_min": _AT_LEAST_1,
    "supermix.n_segments_max": _AT_LEAST_1,
    "supermix.compactness": _POSITIVE,
    "supermix.min_label_voxels": _AT_LEAST_0,
    "supermix.slic_downsample": _AT_LEAST_1,
    "supermix.slic_iterations": _AT_LEAST_1,
    "supermix.lesion_fraction": _UNIT,
    "supermix.lesion_segments_min": _AT_LEAST_1,
    "supermix.lesion_segments_max": _AT_LEAST_1,
    "supermix.lesion_contrast_min": _AT_LEAST_1,
    "supermix.lesion_contrast_max": _AT_LEAST_1,
    "supermix.max_lesions": _AT_LEAST_1,
    "supermix.lesion_enlarging_fraction": _UNIT,
    "supermix.lesion_radius_min": _POSITIVE,
    "supermix.lesion_radius_max": _AT_LEAST_0,
    "supermix.lesion_min_depth": _AT_LEAST_0,
    "supermix.lesion_growth_fraction": _UNIT,
    "detector.architecture": ("siamese", "unet"),
    "detector.base_filters": _AT_LEAST_1,
    "detector.levels": (2, None, False, False),
    "detector.loss": ("focal_tversky", "bce"),
    "detector.alpha": _UNIT,
    "detector.gamma_final": _POSITIVE,
    "detector.gamma_intermediate": _POSITIVE,
    "detector.l2": _AT_LEAST_0,
    "detector.normalization": ("none", "group"),
    "detector.deep_supervision_weight": _AT_LEAST_0,
    "training.crop_shape": _AT_LEAST_1,
    "training.batch_size": _AT_LEAST_1,
    "training.iterations": _AT_LEAST_0,
    "training.pairs_per_iteration": _AT_LEAST_1,
    "training.learning_rate": _POSITIVE,
    "training.decay": _AT_LEAST_0,
    "training.validation_fraction": (0, 1, False, True),
    "training.validation_crops": _AT_LEAST_0,
    "training.min_brain_fraction": _UNIT,
    "training.intensity_augmentation": (0, 1, False, True),
    "training.acquisition_augmentation": _AT_LEAST_0,
    "training.intensity_normalisation": ("wm-peak", "percentile"),
    "training.threshold": (0, 1, True, True),
    "training.min_blob_size": _AT_LEAST_1,
    "training.seed": _ANY,
    "training.weight_averaging": (0, 1, False, True),
}
# (section, smaller, larger): the first may not exceed the second.
ORDERED = (
    ("supermix", "n_segments_min", "n_segments_max"),
    ("supermix", "lesion_segments_min", "lesion_segments_max"),
    ("supermix", "lesion_contrast_min", "lesion_contrast_max"),
)


def _allowed(rule: tuple, whole: bool) -> str:
    """The allowed range of a rule in words, e.g. 'a whole number of 1 or more', 'a number in [0, 1]'."""
    low, high, low_open, high_open = rule
    kind = "a whole number" if whole else "a number"
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} above {low:g}" if low_open else f"{kind} of {low:g} or more"
    if high is not None:
        return f"{kind} below {high:g}" if high_open else f"{kind} of {high:g} or less"
    return f"a finite {kind.removeprefix('a ')}"


def _in_range(number: float, rule: tuple) -> bool:
    low, high, low_open, high_open = rule
    if not math.isfinite(number):
        return False
    if low is not None and (number <= low if low_open else number < low):
        return False
    return not (high is not None and (number >= high if high_open else number > high))


def validate_hyperparams(params: HyperParams) -> None:
    """Refuse a hyper-parameter outside its allowed range (:data:`RANGES`, :data:`ORDERED`).

    Raises ``ValueError`` with one sentence naming the key, the value and the allowed range, e.g.
    ``'vae.levels' = 0 is out of range: it must be a whole number of 1 or more``.
    """
    for key, rule in RANGES.items():
        section, name = key.split(".")
        obj = getattr(params, section)
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if isinstance(rule[0], str):
            if value not in rule:
                raise ValueError(f"'{key}' = {value!r} is not allowed: choose one of {', '.join(rule)}")
            continue
        values = value if isinstance(value, tuple) else (value,)
        whole = all(isinstance(v, int) for v in values)
        if not all(_in_range(float(v), rule) for v in values):
            what = f"every side must be {_allowed(rule, whole)}" if isinstance(value, tuple) \
                else f"it must be {_allowed(rule, whole)}"
            raise ValueError(f"'{key}' = {value!r} is out of range: {what}")
    for section, smaller, larger in ORDERED:
        obj = getattr(params, section)
        if hasattr(obj, smaller) and hasattr(obj, larger) and getattr(obj, smaller) > getattr(obj, larger):
            raise ValueError(f"'{section}.{smaller}' = {getattr(obj, smaller)!r} exceeds "
                             f"'{section}.{larger}' = {getattr(obj, larger)!r}: the minimum must not "
                             "exceed the maximum")
    vae_multiple = 2 ** (params.vae.levels - 1)
    both = math.lcm(vae_multiple, 2 ** (params.detector.levels - 1))
    for key, shape, need in (("vae.crop_shape", params.vae.crop_shape, vae_multiple),
                             ("training.crop_shape", params.training.crop_shape, both)):
        if any(side % need for side in shape):
            raise ValueError(f"'{key}' = {shape!r} does not fit the networks: every side must be a "
                             f"multiple of {need} (2**(levels-1) of the VAE and of the detector)")
