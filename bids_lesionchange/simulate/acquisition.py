"""Scanning a phantom: head pose, voxel grid, partial volume, bias field, gain/contrast, Rician noise.

World coordinates: the phantom lives in MNI-like space; each session has its own scanner space.
``head_pose`` maps phantom world to the session's scanner world, so the session image samples the
phantom at ``inv(head_pose) @ affine @ ijk``. The true transform between sessions,
``head_pose_2 @ inv(head_pose_1)``, maps ses-01 scanner coordinates of an anatomical point to its
ses-02 scanner coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from bids_lesionchange.simulate.sampling import sample_trilinear, separable_upsample, support_index

#: Scanner units of white matter before gain (int16 output keeps ~3 significant digits).
WM_SCANNER_UNITS = 400.0


@dataclass(frozen=True)
class RescanEffects:
    """Which differences between the two sessions to simulate (each can be switched off).

    Attributes
    ----------
    motion : bool
        Rigid head motion between sessions (and a random head pose at baseline).
    bias : bool
        A different smooth multiplicative bias field at each session.
    gain : bool
        A different global gain and contrast (gamma) at each session.
    noise : bool
        Rician noise, with a different level at each session.
    fov : bool
        A slightly different field of view (matrix size) at each session.
    thick_slice : float
        Fraction of subjects whose follow-up is a 2D thick-slice acquisition (0 to 1).
    max_rotation_deg, max_translation_mm : float
        Largest rigid motion between sessions.
    max_bias : float
        Largest relative bias (0.2: the field lies within exp(+-0.2)).
    noise_range : tuple of float
        Noise standard deviation relative to white matter, drawn per session.
    """

    motion: bool = True
    bias: bool = True
    gain: bool = True
    noise: bool = True
    fov: bool = True
    thick_slice: float = 0.0
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 10.0
    max_bias: float = 0.2
    noise_range: tuple[float, float] = (0.015, 0.05)

    def __post_init__(self):
        if not 0.0 <= self.thick_slice <= 1.0:
            raise ValueError(f"thick_slice must lie in [0, 1], got {self.thick_slice}")


@dataclass(frozen=True)
class SessionProtocol:
    """The acquisition of one session: its grid and its scanner effects.

    Attributes
    ----------
    zooms : tuple of float
        Voxel size (mm); a 2D acquisition has thick slices along the third axis.
    shape : tuple of int
        Matrix size.
    acquisition : str
        "3D" or "2D".
    head_pose : ndarray
        4x4 phantom-world to scanner-world matrix.
    gain, gamma : float
        Output = gain * bias * clean**gamma (clean: white matter = 1).
    noise_sigma : float
        Rician noise standard deviation relative to white matter (0 for none).
    bias_seed : int
        Seed of this session's bias field (used only when ``bias_amplitude > 0``).
    bias_amplitude : float
        Largest relative log-bias.
    """

    zooms: tuple[float, float, float]
    shape: tuple[int, int, int]
    acquisition: str
    head_pose: np.ndarray
    gain: float
    gamma: float
    noise_sigma: float
    bias_seed: int
    bias_amplitude: float

    @property
    def affine(self) -> np.ndarray:
        """Return the voxel-to-scanner matrix (RAS, grid centred on the scanner origin)."""
        zooms = np.asarray(self.zooms, dtype=np.float64)
        affine = np.diag(np.append(zooms, 1.0))
        affine[:3, 3] = -0.5 * (np.asarray(self.shape) - 1) * zooms
        return affine


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Return the 3x3 rotation about x, then y, then z by the given angles (degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid_matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Return the 4x4 matrix of a rotation followed by a translation: ``x -> rotation @ x + translation``.

    Parameters
    ----------
    rotation : (3, 3) array-like
        The rotation matrix; from angles in degrees: ``rigid_matrix(rotation_matrix(angles), t)``.
    translation : (3,) array-like
        The translation in mm.
    """
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def random_motion(rng: np.random.Generator, max_rotation_deg: float,
                  max_translation_mm: float) -> np.ndarray:
    """Return a random rigid motion about the scanner origin: angle and shift uniform up to the maxima."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_rotation_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    return rigid_matrix(rotation, direction * rng.uniform(0.0, max_translation_mm))


def bias_field(shape: tuple[int, int, int], amplitude: float, seed: int) -> np.ndarray:
    """Return a smooth multiplicative bias field exp(amplitude * f), f in [-1, 1], on a grid.

    The field is a cubic interpolation of a 4x4x4 random grid spanning the field of view, so it
    is tied to the scanner (not the head) and varies over about a third of the field of view.
    """
    if amplitude <= 0:
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((4, 4, 4))
    log_field = separable_upsample(coarse, shape, order=3)
    log_field /= np.abs(log_field).max()
    return np.exp(amplitude * log_field).astype(np.float32)


def _supersample_offsets(zooms: tuple[float, ...], phantom_mm: float) -> list[np.ndarray]:
    """Return sub-voxel offsets (voxel units) that average a session voxel over the phantom grid."""
    per_axis = []
    for zoom in zooms:
        n = max(1, int(round(zoom / phantom_mm)))
        per_axis.append((np.arange(n) + 0.5) / n - 0.5)
    return [np.array([a, b, c]) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def resample_to_session(volumes: list[np.ndarray], phantom_affine: np.ndarray, protocol: SessionProtocol,
                        supports: list[np.ndarray | None] | None = None,
                        chunk_slices: int = 16) -> list[np.ndarray]:
    """Sample phantom volumes on a session grid, averaging over each session voxel (partial volume).

    One trilinear interpolation from the phantom: each session voxel is the mean of the phantom at
    ``round(zoom / phantom_voxel)`` points per axis spread across it (trilinear weights already
    average over about one phantom voxel).

    Parameters
    ----------
    volumes : list of ndarray
        Phantom-grid volumes (same shape).
    phantom_affine : ndarray
        Voxel-to-world matrix of the phantom grid.
    protocol : SessionProtocol
        Grid and head pose of the session.
    supports : list of (ndarray of bool or None), optional
        Per volume, where it can be non-zero (from :func:`.sampling.dilated_support`); points
        elsewhere are set to 0 without interpolating. The same array object may be shared.
    chunk_slices : int
        Slices along the last axis processed at a time (bounds memory).

    Returns
    -------
    list of ndarray of float32
        One volume per input, on the session grid.
    """
    supports = supports or [None] * len(volumes)
    phantom_mm = float(abs(phantom_affine[0, 0]))
    voxel_to_phantom = np.linalg.inv(phantom_affine) @ np.linalg.inv(protocol.head_pose) @ protocol.affine
    offsets = _supersample_offsets(protocol.zooms, phantom_mm)
    shape = protocol.shape
    outputs = [np.zeros(shape, dtype=np.float32) for _ in volumes]
    ii, jj = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                         indexing="ij")
    for k0 in range(0, shape[2], chunk_slices):
        k1 = min(shape[2], k0 + chunk_slices)
        kk = np.arange(k0, k1, dtype=np.float64)
        grid = np.stack([np.repeat(ii[..., None], k1 - k0, axis=2), np.repeat(jj[..., None], k1 - k0, axis=2),
                         np.broadcast_to(kk, (shape[0], shape[1], k1 - k0))]).reshape(3, -1)
        sums = [np.zeros(grid.shape[1], dtype=np.float64) for _ in volumes]
        for offset in offsets:
            ijk = grid + offset[:, None]
            coords = voxel_to_phantom[:3, :3] @ ijk + voxel_to_phantom[:3, 3:4]
            kept = {}
            for acc, volume, support in zip(sums, volumes, supports):
                if support is not None and id(support) not in kept:
                    kept[id(support)] = support_index(coords, support)
                acc += sample_trilinear(volume, coords, None if support is None else kept[id(support)])
        for out, acc in zip(outputs, sums):
            out[:, :, k0:k1] = (acc / len(offsets)).reshape(shape[0], shape[1], k1 - k0)
    return outputs


def acquire(clean: np.ndarray, protocol: SessionProtocol, noise_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply contrast, bias, gain and Rician noise to a clean session image (white matter = 1).

    Returns
    -------
    image : ndarray of float32
        In scanner units (white matter about ``WM_SCANNER_UNITS * gain``).
    bias : ndarray of float32
        The bias field that was applied.
    """
    bias = bias_field(protocol.shape, protocol.bias_amplitude, protocol.bias_seed)
    scale = WM_SCANNER_UNITS * protocol.gain
    signal = scale * bias * np.power(np.clip(clean, 0.0, None), protocol.gamma)
    if protocol.noise_sigma > 0:
        rng = np.random.default_rng(noise_seed)
        sigma = scale * protocol.noise_sigma
        real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
        signal = np.sqrt(real * real + imag * imag)
    return signal.astype(np.float32), bias
