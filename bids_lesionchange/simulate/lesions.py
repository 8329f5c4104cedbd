"""Irregular MS lesions in white matter, and how they evolve between two sessions.

A lesion is a smooth random field in a small box around its centre (an ellipsoid bump plus smooth
noise). Its voxels are taken by a priority flood from the centre, highest field value first, so a
lesion of ``n`` voxels is always the first ``n`` voxels of one fixed order: an enlarged lesion
contains the baseline lesion and a shrunk one is contained in it, by construction. Soft edges
come from a small Gaussian blur of the binary lesion; the lesion *mask* is where that fraction
reaches 0.5.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from bids_lesionchange.simulate.anatomy import SubjectAnatomy, smooth_random_field

#: Where baseline lesions are placed, with probabilities (MS: mostly periventricular).
LOCATION_PROBABILITIES = {"periventricular": 0.55, "deep": 0.30, "juxtacortical": 0.15}
EDGE_SIGMA_MM = 0.6
_NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


@dataclass(frozen=True)
class LesionShape:
    """A lesion's fixed growth order inside its box on the phantom grid.

    Attributes
    ----------
    corner : tuple of int
        Phantom voxel index of the box's first corner.
    order : ndarray
        (K, 3) box-relative voxel indices in flood order (first = the centre).
    box_shape : tuple of int
        Shape of the box.
    contrast : float
        FLAIR intensity of the lesion relative to white matter.
    location : str
        "periventricular", "deep" or "juxtacortical".
    """

    corner: tuple[int, int, int]
    order: np.ndarray
    box_shape: tuple[int, int, int]
    contrast: float
    location: str


@dataclass(frozen=True)
class LesionInstance:
    """One lesion at one session: its shape and how many of its ordered voxels it has."""

    lesion_id: int
    shape: LesionShape
    n_voxels: int

    def binary_box(self) -> np.ndarray:
        """Return the binary lesion inside its box."""
        box = np.zeros(self.shape.box_shape, dtype=bool)
        idx = self.shape.order[: self.n_voxels]
        box[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        return box

    def slices(self, volume_shape: tuple[int, ...]) -> tuple[slice, ...]:
        """Return the box's slices in the phantom grid."""
        return tuple(slice(c, c + s) for c, s in zip(self.shape.corner, self.shape.box_shape))


@dataclass
class LesionHistory:
    """Lesions at baseline and follow-up, and what happened to each.

    Attributes
    ----------
    baseline, followup : list of LesionInstance
        The lesions present at each session.
    events : list of dict
        One row per lesion: id, location, event (stable|new|enlarging|shrinking), volumes (mm3).
    """

    baseline: list[LesionInstance] = field(default_factory=list)
    followup: list[LesionInstance] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def count(self, event: str) -> int:
        """Return how many lesions had this event."""
        return sum(1 for row in self.events if row["event"] == event)


def _flood_order(values: np.ndarray, allowed: np.ndarray, start: tuple[int, int, int],
                 limit: int) -> np.ndarray:
    """Return up to ``limit`` voxels reached from ``start``, highest ``values`` first (6-connected)."""
    visited = np.zeros(values.shape, dtype=bool)
    heap = [(-float(values[start]), start)]
    visited[start] = True
    order = []
    shape = values.shape
    while heap and len(order) < limit:
        _, (i, j, k) = heapq.heappop(heap)
        order.append((i, j, k))
        for di, dj, dk in _NEIGHBOURS:
            ni, nj, nk = i + di, j + dj, k + dk
            if 0 <= ni < shape[0] and 0 <= nj < shape[1] and 0 <= nk < shape[2] \
                    and not visited[ni, nj, nk] and allowed[ni, nj, nk]:
                visited[ni, nj, nk] = True
                heapq.heappush(heap, (-float(values[ni, nj, nk]), (ni, nj, nk)))
    return np.asarray(order, dtype=np.int32).reshape(-1, 3)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def make_lesion_shape(centre: tuple[int, int, int], max_volume_mm3: float, allowed: np.ndarray,
                      voxel_mm: float, contrast: float, location: str,
                      rng: np.random.Generator) -> LesionShape | None:
    """Make an irregular lesion that can grow to ``max_volume_mm3`` around ``centre``.

    Parameters
    ----------
    centre : tuple of int
        Phantom voxel where the lesion starts (must be allowed).
    max_volume_mm3 : float
        The largest volume this lesion will ever need (its enlarged size).
    allowed : ndarray of bool
        Phantom voxels a lesion may occupy (white matter, or white plus grey for juxtacortical).
    voxel_mm : float
        Phantom voxel size.
    contrast : float
        Lesion intensity relative to white matter.
    location : str
        Label kept with the lesion.
    rng : numpy.random.Generator
        Source of the shape.

    Returns
    -------
    LesionShape or None
        None when ``centre`` is not allowed.
    """
    if not allowed[centre]:
        return None
    radius_mm = (3.0 * max_volume_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    aspect = rng.uniform(1.0, 2.2)
    axes = np.array([aspect, 1.0, rng.uniform(0.7, 1.0)])
    axes /= np.cbrt(np.prod(axes))
    half = int(np.ceil(1.8 * radius_mm * axes.max() / voxel_mm)) + 2
    lower = np.maximum(np.asarray(centre) - half, 0)
    upper = np.minimum(np.asarray(centre) + half + 1, allowed.shape)
    box_shape = tuple(int(u - l) for l, u in zip(lower, upper))
    grid = np.indices(box_shape, dtype=np.float32)
    offset = (grid - (np.asarray(centre) - lower)[:, None, None, None]) * voxel_mm
    rotated = np.tensordot(_random_rotation(rng).astype(np.float32), offset, axes=1)
    ellipsoid = np.sqrt(np.sum((rotated / (radius_mm * axes[:, None, None, None])) ** 2, axis=0))
    noise = smooth_random_field(box_shape, max(0.35 * radius_mm / voxel_mm, 0.7), rng)
    values = -ellipsoid + 0.6 * noise
    box_allowed = allowed[tuple(slice(l, u) for l, u in zip(lower, upper))]
    limit = int(np.ceil(max_volume_mm3 / voxel_mm**3))
    order = _flood_order(values, box_allowed, tuple(int(c - l) for c, l in zip(centre, lower)), limit)
    return LesionShape(corner=tuple(int(v) for v in lower), order=order, box_shape=box_shape,
                       contrast=float(contrast), location=location)


@dataclass(frozen=True)
class PlacementMaps:
    """Candidate centres per location, and where lesions may lie."""

    candidates: dict[str, np.ndarray]  # location -> (N, 3) phantom voxel indices
    allowed_wm: np.ndarray
    allowed_juxtacortical: np.ndarray


def placement_maps(anatomy: SubjectAnatomy) -> PlacementMaps:
    """Find periventricular, deep and juxtacortical white-matter voxels on a ~2 mm grid."""
    voxel = anatomy.voxel_mm
    step = max(1, int(round(2.0 / voxel)))
    coarse = tuple(slice(0, None, step) for _ in range(3))
    cvox = voxel * step
    gm, wm, csf, icv = (a[coarse] for a in (anatomy.gm, anatomy.wm, anatomy.csf, anatomy.icv))
    depth = ndi.distance_transform_edt(icv > 0.5) * cvox
    ventricles = (csf > 0.5) & (depth > 12.0)
    dist_ventricle = ndi.distance_transform_edt(~ventricles) * cvox
    dist_gm = ndi.distance_transform_edt(gm < 0.5) * cvox
    masks = {
        "periventricular": (wm > 0.6) & (dist_ventricle > 1.0) & (dist_ventricle <= 8.0),
        "deep": (wm > 0.85) & (dist_ventricle > 8.0) & (dist_gm > 5.0),
        "juxtacortical": (wm > 0.5) & (dist_gm <= 3.0) & (dist_ventricle > 12.0) & (depth > 8.0),
    }
    candidates = {name: np.argwhere(mask) * step for name, mask in masks.items()}
    allowed_wm = (anatomy.wm > 0.35) & (anatomy.csf < 0.5)
    allowed_jc = ((anatomy.wm + anatomy.gm) > 0.5) & (anatomy.csf < 0.4)
    return PlacementMaps(candidates=candidates, allowed_wm=allowed_wm, allowed_juxtacortical=allowed_jc)


@dataclass(frozen=True)
class LesionLoad:
    """How many lesions of which size a subject gets."""

    n_baseline: tuple[int, int] = (4, 15)
    volume_mm3: tuple[float, float] = (10.0, 5000.0)
    new_volume_mm3: tuple[float, float] = (20.0, 1500.0)
    n_new: tuple[int, int] = (1, 3)
    n_enlarging: tuple[int, int] = (1, 2)
    enlarge_factor: tuple[float, float] = (1.6, 3.0)
    p_shrinking: float = 0.3
    shrink_factor: tuple[float, float] = (0.4, 0.7)


def _draw_lesion(lesion_id: int, volume: float, max_volume: float, maps: PlacementMaps,
                 anatomy: SubjectAnatomy, rng: np.random.Generator, forbidden: np.ndarray | None,
                 location: str | None = None) -> LesionInstance:
    names = list(LOCATION_PROBABILITIES)
    probs = np.array([LOCATION_PROBABILITIES[n] for n in names])
    voxel = anatomy.voxel_mm
    min_voxels = max(1, int(round(volume / voxel**3)))
    for _ in range(200):
        where = location or names[rng.choice(len(names), p=probs)]
        candidates = maps.candidates[where]
        if len(candidates) == 0:
            continue
        centre = tuple(int(v) for v in candidates[rng.integers(len(candidates))])
        allowed = maps.allowed_juxtacortical if where == "juxtacortical" else maps.allowed_wm
        if forbidden is not None:
            allowed = allowed & ~forbidden
        shape = make_lesion_shape(centre, max_volume, allowed, voxel, rng.uniform(1.35, 1.75), where, rng)
        if shape is None or len(shape.order) < min_voxels:
            continue
        return LesionInstance(lesion_id, shape, min_voxels)
    raise RuntimeError("could not place a lesion: the white matter of this anatomy is too small")


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def simulate_lesion_history(anatomy: SubjectAnatomy, change: bool, load: LesionLoad,
                            rng: np.random.Generator) -> LesionHistory:
    """Place baseline lesions and, for a Change subject, new, enlarging and shrinking ones.

    Parameters
    ----------
    anatomy : SubjectAnatomy
        Where lesions may go.
    change : bool
        False: the follow-up has exactly the baseline lesions.
    load : LesionLoad
        Numbers and sizes.
    rng : numpy.random.Generator
        Source of everything random here.

    Returns
    -------
    LesionHistory
    """
    maps = placement_maps(anatomy)
    voxel3 = anatomy.voxel_mm ** 3
    history = LesionHistory()
    n_baseline = int(rng.integers(load.n_baseline[0], load.n_baseline[1] + 1))
    n_enlarging = int(rng.integers(load.n_enlarging[0], load.n_enlarging[1] + 1)) if change else 0
    n_enlarging = min(n_enlarging, n_baseline)
    n_new = int(rng.integers(load.n_new[0], load.n_new[1] + 1)) if change else 0
    enlarging_ids = set(rng.choice(n_baseline, size=n_enlarging, replace=False).tolist())
    candidates_shrink = [i for i in range(n_baseline) if i not in enlarging_ids]
    shrinking_ids = set()
    if change and candidates_shrink and rng.random() < load.p_shrinking:
        shrinking_ids.add(int(rng.choice(candidates_shrink)))

    for lesion_id in range(n_baseline):
        volume = _log_uniform(rng, *load.volume_mm3)
        factor = rng.uniform(*load.enlarge_factor) if lesion_id in enlarging_ids else 1.0
        lesion = _draw_lesion(lesion_id, volume, volume * factor, maps, anatomy, rng, None)
        history.baseline.append(lesion)
        event, n_follow = "stable", lesion.n_voxels
        if lesion_id in enlarging_ids:
            # at least a few voxels more, and never more than the shape could reach
            n_follow = min(len(lesion.shape.order), max(int(round(lesion.n_voxels * factor)),
                                                        lesion.n_voxels + 4))
            event = "enlarging" if n_follow > lesion.n_voxels else "stable"
        elif lesion_id in shrinking_ids and lesion.n_voxels >= 4:
            n_follow = max(1, int(round(lesion.n_voxels * rng.uniform(*load.shrink_factor))))
            event = "shrinking"
        history.followup.append(replace(lesion, n_voxels=n_follow))
        history.events.append({"lesion_id": lesion_id, "location": lesion.shape.location, "event": event,
                               "volume_ses01_mm3": lesion.n_voxels * voxel3,
                               "volume_ses02_mm3": n_follow * voxel3})

    if n_new:
        occupied = np.zeros(anatomy.shape, dtype=bool)
        for lesion in history.baseline + history.followup:
            occupied[lesion.slices(anatomy.shape)] |= lesion.binary_box()
        margin = max(1, int(round(3.0 / anatomy.voxel_mm)))
        forbidden = ndi.binary_dilation(occupied, iterations=margin)
        for k in range(n_new):
            lesion_id = n_baseline + k
            volume = _log_uniform(rng, *load.new_volume_mm3)
            lesion = _draw_lesion(lesion_id, volume, volume, maps, anatomy, rng, forbidden)
            history.followup.append(lesion)
            history.events.append({"lesion_id": lesion_id, "location": lesion.shape.location,
                                   "event": "new", "volume_ses01_mm3": 0.0,
                                   "volume_ses02_mm3": lesion.n_voxels * voxel3})
            box = lesion.slices(anatomy.shape)
            grown = ndi.binary_dilation(lesion.binary_box(), iterations=margin)
            forbidden[box] |= grown
    return history


def render_lesions(instances: list[LesionInstance], shape: tuple[int, int, int],
                   voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the soft lesion fraction (max over lesions) and the lesion contrast map.

    Parameters
    ----------
    instances : list of LesionInstance
        Lesions to draw.
    shape : tuple of int
        Phantom grid shape.
    voxel_mm : float
        Phantom voxel size (sets the soft edge width, ``EDGE_SIGMA_MM``).

    Returns
    -------
    fraction : ndarray of float32
        In [0, 1]; the lesion mask is ``fraction >= 0.5``.
    contrast : ndarray of float32
        Intensity (relative to WM) of the lesion that dominates each voxel; 0 where none.
    """
    fraction = np.zeros(shape, dtype=np.float32)
    contrast = np.zeros(shape, dtype=np.float32)
    sigma = EDGE_SIGMA_MM / voxel_mm
    for lesion in instances:
        box = lesion.slices(shape)
        soft = ndi.gaussian_filter(lesion.binary_box().astype(np.float32), sigma=sigma, mode="constant")
        larger = soft > fraction[box]
        fraction[box] = np.where(larger, soft, fraction[box])
        contrast[box] = np.where(larger, lesion.shape.contrast, contrast[box])
    return fraction, contrast
