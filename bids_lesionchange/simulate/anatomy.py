"""Subject anatomy from the MNI152 2009 templates shipped in nilearn's wheel (no download).

The template gives grey- and white-matter probabilities and a brain mask. From them this module
builds an intracranial volume, cerebrospinal fluid, and a skull and scalp shell (a signed distance
from the intracranial surface), then makes one subject by a smooth random deformation, ventricle
enlargement and brain atrophy. Everything is in the template's world space (MNI mm); the subject's
"phantom" grid is the template grid.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

from bids_lesionchange.errors import InputError
from bids_lesionchange.simulate.sampling import dilated_support, sample_trilinear, separable_upsample, support_index

LOGGER = logging.getLogger(__name__)

#: Intensity of each pure tissue on a FLAIR scan, relative to white matter. GM/WM = 1.185 and
#: lesion/WM = 1.40 were measured on a real 3D FLAIR (Lesjak et al. 2018, patient 26); pure CSF is
#: suppressed by the inversion pulse (measured 0.69 there, but that class is partial-volumed).
HEAD_SHELL_MAX_MM = 24.0  # beyond skull plus scalp (at most 15 mm, see AnatomyParams.draw) and their soft edge

FLAIR_INTENSITY = {
    "csf": 0.28,
    "gm": 1.20,
    "wm": 1.00,
    "cortical_bone": 0.08,
    "diploe": 0.45,
    "scalp": 0.85,
}


@dataclass(frozen=True)
class TemplateTissues:
    """Tissue maps of the MNI152 2009 template on its own grid (float32, values in [0, 1]).

    Attributes
    ----------
    gm, wm : ndarray
        Grey- and white-matter probabilities.
    icv : ndarray
        Intracranial volume fraction (brain plus the CSF around it), smooth edge.
    outside_distance_mm : ndarray
        Signed distance to the intracranial surface in mm (positive outside), used for skull/scalp.
    affine : ndarray
        4x4 voxel-to-MNI-world matrix.
    ventricle_centre_mm : ndarray
        World coordinates of the lateral ventricles' centroid.
    brain_centre_mm : ndarray
        World coordinates of the intracranial centroid.
    brain_support, head_support : ndarray of bool
        Where GM/WM, and the head (ICV, skull, scalp), can be non-zero after trilinear sampling.
    """

    gm: np.ndarray
    wm: np.ndarray
    icv: np.ndarray
    outside_distance_mm: np.ndarray
    affine: np.ndarray
    ventricle_centre_mm: np.ndarray
    brain_centre_mm: np.ndarray
    brain_support: np.ndarray
    head_support: np.ndarray

    @property
    def voxel_mm(self) -> float:
        """Return the isotropic voxel size in mm."""
        return float(abs(self.affine[0, 0]))


TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_path(kind: str) -> Path:
    """Return the path of an MNI152 2009 map inside nilearn's installed package (no import, no download)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError(None, "synth", "nilearn is not installed: it ships the MNI152 templates the "
                         "simulator needs; install it with 'pip install nilearn'")
    path = Path(spec.origin).parent / "datasets" / "data" / TEMPLATE_FILES[kind]
    if not path.exists():
        raise InputError(path, "synth", "this nilearn has no bundled MNI152 2009 map: install nilearn>=0.10")
    return path


def _read_template(kind: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a template map scaled to [0, 1] at 1 mm or (smoothed, subsampled) 2 mm, and its affine."""
    import nibabel as nib

    image = nib.load(str(template_path(kind)))
    data = np.asarray(image.dataobj, dtype=np.float32)
    data /= data.max()
    affine = np.asarray(image.affine, dtype=np.float64)
    if resolution == 1:
        return data, affine
    if resolution != 2:
        raise ValueError(f"template resolution must be 1 or 2 mm, got {resolution}")
    data = ndi.gaussian_filter(data, sigma=0.85)[::2, ::2, ::2]
    affine = affine.copy()
    affine[:3, :3] *= 2.0
    return np.ascontiguousarray(data), affine


@lru_cache(maxsize=2)
def load_template_tissues(resolution: int) -> TemplateTissues:
    """Load the MNI152 2009 GM/WM/T1 maps from nilearn's wheel and derive ICV and a head shell.

    Parameters
    ----------
    resolution : int
        1 (mm, the files shipped inside nilearn, read without network access) or 2 (smoothed and
        subsampled from them).

    Returns
    -------
    TemplateTissues
        Cached per resolution; callers must not modify the arrays.
    """
    gm, affine = _read_template("gm", resolution)
    wm, _ = _read_template("wm", resolution)
    t1, _ = _read_template("t1", resolution)
    brain = t1 > 0.2  # nilearn's load_mni152_brain_mask rule
    voxel = float(abs(affine[0, 0]))
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]

    closing_iter = max(1, int(round(3.0 / voxel)))
    icv_binary = ndi.binary_closing(brain | (total > 0.1), iterations=closing_iter)
    icv_binary = ndi.binary_fill_holes(icv_binary)
    icv = ndi.gaussian_filter(icv_binary.astype(np.float32), sigma=0.7 / voxel)
    icv = np.maximum(icv, np.minimum(total, 1.0))
    outside = ndi.distance_transform_edt(~icv_binary).astype(np.float32) * voxel
    inside = ndi.distance_transform_edt(icv_binary).astype(np.float32) * voxel
    signed = outside - inside

    csf = np.clip(icv - gm - wm, 0.0, 1.0)
    deep_ventricles = (csf > 0.6) & (inside > 25.0)
    ijk = np.argwhere(deep_ventricles).mean(axis=0)
    ventricle_centre = (affine @ np.append(ijk, 1.0))[:3]
    brain_centre = (affine @ np.append(np.argwhere(icv_binary).mean(axis=0), 1.0))[:3]
    LOGGER.debug("template %d mm: ventricle centre %s, brain centre %s", resolution, ventricle_centre,
                 brain_centre)
    return TemplateTissues(gm=gm, wm=wm, icv=icv.astype(np.float32), outside_distance_mm=signed,
                           affine=affine, ventricle_centre_mm=ventricle_centre,
                           brain_centre_mm=brain_centre,
                           brain_support=dilated_support(total > 0),
                           head_support=dilated_support(signed < HEAD_SHELL_MAX_MM))


@dataclass(frozen=True)
class AnatomyParams:
    """How one subject differs from the template.

    Attributes
    ----------
    deformation_mm : float
        Largest smooth random displacement (mm).
    deformation_scale_mm : float
        Spatial smoothness of that displacement (Gaussian sigma, mm).
    ventricle_enlargement : float
        0 keeps the template's ventricles; 0.3 magnifies the region around them by up to 30 %.
    atrophy : float
        Fractional shrinkage of the brain inside a fixed skull (the gap becomes CSF).
    skull_thickness_mm, scalp_thickness_mm : float
        Thickness of the bone and of the soft tissue over it.
    texture : float
        Relative amplitude of the smooth multiplicative tissue texture.
    """

    deformation_mm: float = 4.0
    deformation_scale_mm: float = 12.0
    ventricle_enlargement: float = 0.1
    atrophy: float = 0.02
    skull_thickness_mm: float = 6.5
    scalp_thickness_mm: float = 5.5
    texture: float = 0.03

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "AnatomyParams":
        """Draw a plausible adult MS subject."""
        return cls(
            deformation_mm=float(rng.uniform(2.0, 5.0)),
            deformation_scale_mm=float(rng.uniform(10.0, 16.0)),
            ventricle_enlargement=float(rng.uniform(0.0, 0.3)),
            atrophy=float(rng.uniform(0.0, 0.05)),
            skull_thickness_mm=float(rng.uniform(5.0, 8.0)),
            scalp_thickness_mm=float(rng.uniform(4.0, 7.0)),
            texture=float(rng.uniform(0.02, 0.04)),
        )


@dataclass
class SubjectAnatomy:
    """One subject's anatomy on the phantom grid (the template grid, MNI-like world space).

    Attributes
    ----------
    gm, wm, csf : ndarray
        Tissue fractions inside the intracranial volume (float32).
    icv : ndarray
        Intracranial fraction; ``brain`` is GM + WM + CSF inside it.
    skull, diploe, scalp : ndarray
        Fractions of cortical bone, marrow-filled diploe and scalp soft tissue.
    texture : ndarray
        Smooth multiplicative texture (around 1) shared by both sessions.
    affine : ndarray
        Voxel-to-world matrix of the phantom grid.
    params : AnatomyParams
        What made this subject.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    icv: np.ndarray
    skull: np.ndarray
    diploe: np.ndarray
    scalp: np.ndarray
    texture: np.ndarray
    affine: np.ndarray
    params: AnatomyParams

    @property
    def voxel_mm(self) -> float:
        """Return the isotropic voxel size in mm."""
        return float(abs(self.affine[0, 0]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Return the phantom grid shape."""
        return tuple(self.gm.shape)

    def flair(self) -> np.ndarray:
        """Return the lesion-free FLAIR intensity (white matter = 1) with partial volume."""
        inten = FLAIR_INTENSITY
        image = (inten["csf"] * self.csf + inten["gm"] * self.gm + inten["wm"] * self.wm
                 + inten["cortical_bone"] * self.skull + inten["diploe"] * self.diploe
                 + inten["scalp"] * self.scalp)
        return image.astype(np.float32)


def smooth_random_field(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator,
                        step: int = 1) -> np.ndarray:
    """Return a smooth Gaussian random field of unit maximum magnitude.

    The field is drawn on a grid ``step`` times coarser (cheaper for large volumes) and linearly
    upsampled; ``sigma_vox`` is given in fine voxels.
    """
    coarse_shape = tuple(shape) if step == 1 else tuple(int(np.ceil(s / step)) + 1 for s in shape)
    noise = rng.standard_normal(coarse_shape).astype(np.float32)
    field = ndi.gaussian_filter(noise, sigma=max(sigma_vox / step, 0.5), mode="reflect")
    if step > 1:
        field = separable_upsample(field, shape, order=1,
                                   positions=[np.arange(s, dtype=np.float64) / step for s in shape])
    peak = float(np.abs(field).max())
    return field / peak if peak > 0 else field


def make_subject_anatomy(tissues: TemplateTissues, params: AnatomyParams,
                         rng: np.random.Generator) -> SubjectAnatomy:
    """Deform the template into one subject (one interpolation of each template map).

    Parameters
    ----------
    tissues : TemplateTissues
        The template maps (see :func:`load_template_tissues`).
    params : AnatomyParams
        Deformation, ventricle enlargement, atrophy and head shell thickness.
    rng : numpy.random.Generator
        Source of the random deformation and texture.

    Returns
    -------
    SubjectAnatomy
        On the template grid.
    """
    shape = tissues.gm.shape
    voxel = tissues.voxel_mm
    step = max(1, int(round(4.0 / voxel)))
    sigma_vox = params.deformation_scale_mm / voxel
    displacement = np.stack([smooth_random_field(shape, sigma_vox, rng, step) for _ in range(3)])
    displacement *= params.deformation_mm / voxel

    ijk = np.indices(shape, dtype=np.float32)
    head_coords = ijk + displacement
    del displacement

    # Brain coordinates: magnify around the ventricles, then shrink the brain about its centre.
    inv_affine = np.linalg.inv(tissues.affine)
    vent = (inv_affine @ np.append(tissues.ventricle_centre_mm, 1.0))[:3].astype(np.float32)
    centre = (inv_affine @ np.append(tissues.brain_centre_mm, 1.0))[:3].astype(np.float32)
    spread_vox = np.array([14.0, 30.0, 18.0], dtype=np.float32) / voxel
    offset = head_coords - vent[:, None, None, None]
    weight = np.exp(-0.5 * np.sum((offset / spread_vox[:, None, None, None]) ** 2, axis=0))
    brain_coords = head_coords - params.ventricle_enlargement * weight[None] * offset
    del offset, weight
    brain_coords = centre[:, None, None, None] + (brain_coords - centre[:, None, None, None]) / (
        1.0 - params.atrophy)

    brain_coords = brain_coords.reshape(3, -1)
    keep = support_index(brain_coords, tissues.brain_support)
    gm = sample_trilinear(tissues.gm, brain_coords, keep).reshape(shape)
    wm = sample_trilinear(tissues.wm, brain_coords, keep).reshape(shape)
    del brain_coords
    head_coords = head_coords.reshape(3, -1)
    keep = support_index(head_coords, tissues.head_support)
    icv = sample_trilinear(tissues.icv, head_coords, keep).reshape(shape)
    distance = sample_trilinear(tissues.outside_distance_mm, head_coords, keep,
                                cval=2 * HEAD_SHELL_MAX_MM).reshape(shape)
    del head_coords, ijk

    gm = np.minimum(gm, icv)
    wm = np.minimum(wm, icv - gm)
    csf = np.clip(icv - gm - wm, 0.0, 1.0)

    def ramp(d: np.ndarray) -> np.ndarray:
        """Soft step from 0 (d << 0) to 1 (d >> 0) over about a voxel."""
        return expit(d / (0.5 * voxel))

    skull_total = params.skull_thickness_mm
    inner_table = ramp(distance) - ramp(distance - 0.3 * skull_total)
    diploe = ramp(distance - 0.3 * skull_total) - ramp(distance - 0.7 * skull_total)
    outer_table = ramp(distance - 0.7 * skull_total) - ramp(distance - skull_total)
    scalp = ramp(distance - skull_total) - ramp(distance - skull_total - params.scalp_thickness_mm)
    outside = 1.0 - icv
    skull = ((inner_table + outer_table) * outside).astype(np.float32)
    diploe = (diploe * outside).astype(np.float32)
    scalp = (scalp * outside).astype(np.float32)

    texture = 1.0 + params.texture * smooth_random_field(shape, 2.0 / voxel, rng, 1)
    return SubjectAnatomy(gm=gm, wm=wm, csf=csf.astype(np.float32), icv=icv, skull=skull,
                          diploe=diploe, scalp=scalp, texture=texture.astype(np.float32),
                          affine=tissues.affine.copy(), params=params)
