"""An analytic head phantom with a FLAIR-like contrast, for tests and benchmarks.

The phantom is a function of world coordinates (mm), so a copy moved by a known rigid motion
is evaluated directly at moved coordinates: the ground truth has no interpolation error.
Layers from outside in: scalp (bright, like fat), skull (dark), cerebrospinal fluid (dark),
cortex (grey matter, brighter than white matter in FLAIR), white matter, two ventricles of
unequal size (dark, asymmetric so that every rotation is identifiable) and a few lesions
(bright). A smooth random texture, a multiplicative bias field and Rician-like noise make it
less ideal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_lesionchange.simulate.acquisition import rigid_matrix, rotation_matrix


@dataclass(frozen=True)
class Phantom:
    """A phantom image with its ground truth."""

    data: np.ndarray  # float32 intensities
    affine: np.ndarray  # voxel-to-world (RAS mm)
    brain_mask: np.ndarray  # bool: brain tissue and ventricles (no outer CSF, no skull)
    motion: np.ndarray  # 4x4: a point p of the reference head appears at motion @ p


def _ellipsoid(points: np.ndarray, centre, radii) -> np.ndarray:
    """Return sum(((p - c) / r)^2): below 1 inside the ellipsoid."""
    return (((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(axis=-1)


def head_phantom(shape=(40, 40, 40), voxel_size: float = 2.0, *, head_radius_mm: float = 36.0,
                 rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0), skull: bool = True,
                 noise: float = 0.02, bias: float = 0.15, lesions=(), seed: int = 0,
                 anatomy_seed: int = 0) -> Phantom:
    """Build a FLAIR-like head, optionally moved by a rigid motion.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape; the grid is RAS, centred on the world origin.
    voxel_size : float
        Isotropic voxel size in mm.
    head_radius_mm : float
        Outer radius of the scalp along the left-right axis (other axes scaled from it).
    rotation_deg, translation_mm
        The head's motion about the world origin: rotations about x, then y, then z (degrees,
        :func:`~bids_lesionchange.simulate.acquisition.rotation_matrix`), then the translation (mm).
    skull : bool
        Draw scalp and skull; False gives a brain-extracted image.
    noise, bias : float
        Noise standard deviation and bias-field amplitude (fraction of intensity).
    lesions : sequence of (centre_mm, radius_mm)
        Extra bright spherical lesions in reference-head coordinates.
    seed : int
        Seed of the noise and bias field (differs between sessions).
    anatomy_seed : int
        Seed of the anatomy's texture; another seed is another subject.

    Returns
    -------
    Phantom
    """
    shape = tuple(int(s) for s in shape)
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * voxel_size
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk * voxel_size + affine[:3, 3]
    motion = rigid_matrix(rotation_matrix(rotation_deg), translation_mm)
    inverse = np.linalg.inv(motion)
    points = world @ inverse[:3, :3].T + inverse[:3, 3]  # reference-head coordinates

    r = head_radius_mm
    scale = np.array([1.0, 1.2, 1.05])
    anatomy = np.random.default_rng(10_000 + anatomy_seed)
    head_centre = np.zeros(3)
    if anatomy_seed:
        scale = scale * anatomy.uniform(0.85, 1.1, 3)
        head_centre = anatomy.uniform(-0.1, 0.1, 3) * r
    scalp = _ellipsoid(points, head_centre, r * scale)
    skull_in = _ellipsoid(points, head_centre, (r - 0.1 * r) * scale)
    csf_in = _ellipsoid(points, head_centre, (r - 0.22 * r) * scale)
    brain = _ellipsoid(points, head_centre, (r - 0.28 * r) * scale)
    wm = _ellipsoid(points, head_centre, (r - 0.42 * r) * scale)
    vent_l = _ellipsoid(points, head_centre + np.array([-0.12, 0.05, 0.05]) * r,
                        np.array([0.08, 0.25, 0.1]) * r)
    vent_r = _ellipsoid(points, head_centre + np.array([0.1, -0.05, 0.0]) * r,
                        np.array([0.06, 0.18, 0.08]) * r)

    # Folding: the grey/white boundary and the brain surface undulate with the direction
    # from the centre (a few random plane waves on the unit sphere), so the anatomy has
    # features at every orientation.
    offset = points - head_centre
    direction = offset / np.maximum(np.linalg.norm(offset, axis=-1, keepdims=True), 1e-6)
    folds = np.zeros(shape, dtype=np.float64)
    for _ in range(8):
        wave = anatomy.normal(size=3) * anatomy.uniform(3.0, 7.0)
        folds += np.sin(direction @ wave + anatomy.uniform(0, 2 * np.pi)) / 8.0
    brain = brain * (1.0 + 0.12 * folds)
    wm = wm * (1.0 + 0.35 * folds)

    # Smooth texture: Gaussian blobs, fixed per anatomy.
    texture = np.zeros(shape, dtype=np.float64)
    for _ in range(40):
        centre = head_centre + anatomy.uniform(-0.55, 0.55, 3) * r * scale
        width = anatomy.uniform(0.05, 0.12) * r
        amplitude = anatomy.uniform(-0.2, 0.2)
        texture += amplitude * np.exp(-_ellipsoid(points, centre, [width] * 3) / 2.0)

    # Soft edges (a partial-volume model, ~0.6 voxel wide) keep the image band-limited, as
    # scanned images are, so that interpolation does not dominate the comparisons.
    edge = 0.6 * voxel_size

    def inside(value, radius):
        distance = (np.sqrt(value) - 1.0) * radius
        return 0.5 * (1.0 - np.tanh(distance / edge))

    def paint(image, value, weight):
        return image * (1.0 - weight) + value * weight

    brain_mask = brain < 1.0
    image = np.zeros(shape, dtype=np.float64)
    if skull:
        image = paint(image, 0.55, inside(scalp, r))
        image = paint(image, 0.06, inside(skull_in, 0.9 * r))
        image = paint(image, 0.1, inside(csf_in, 0.78 * r))
    image = paint(image, 0.7 + texture, inside(brain, 0.72 * r))
    image = paint(image, 0.55 + 0.5 * texture, inside(wm, 0.58 * r))
    image = paint(image, 0.1, np.maximum(inside(vent_l, 0.12 * r), inside(vent_r, 0.1 * r)))
    for centre, radius in lesions:
        image = paint(image, 1.0, inside(_ellipsoid(points, centre, [radius] * 3), radius))

    rng = np.random.default_rng(seed)
    if bias:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        field = 1.0 + bias * np.tanh((world @ direction) / (1.5 * r))
        image *= field
    if noise:
        head = image > 1e-3
        real = image + rng.normal(0, noise, shape)
        imag = rng.normal(0, noise, shape)
        magnitude = np.sqrt(real ** 2 + imag ** 2)
        image = np.where(head, magnitude, np.abs(rng.normal(0, noise / 4, shape)))
    if not skull:
        image[~brain_mask] = 0.0
    return Phantom(image.astype(np.float32), affine, brain_mask, motion)
