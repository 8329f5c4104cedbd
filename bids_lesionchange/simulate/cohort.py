"""A synthetic longitudinal FLAIR cohort: subjects in memory, and a BIDS dataset with ground truth.

Each subject is an MNI152 anatomy deformed at random (:mod:`.anatomy`), with irregular lesions
(:mod:`.lesions`), scanned twice (:mod:`.acquisition`). NoChange subjects have identical lesions at
both sessions; Change subjects gain new lesions and enlarge some existing ones at follow-up.
"""

from __future__ import annotations

import gzip
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_lesionchange import __version__
from bids_lesionchange.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from bids_lesionchange.errors import InputError
from bids_lesionchange.simulate.acquisition import (
    RescanEffects,
    SessionProtocol,
    acquire,
    random_motion,
    resample_to_session,
    rigid_matrix,
    rotation_matrix,
)
from bids_lesionchange.simulate.anatomy import AnatomyParams, load_template_tissues, make_subject_anatomy
from bids_lesionchange.simulate.sampling import dilated_support
from bids_lesionchange.simulate.lesions import LesionHistory, LesionLoad, render_lesions, simulate_lesion_history

LOGGER = logging.getLogger(__name__)

GROUPS = ("NoChange", "Change")
BIDS_VERSION = "1.10.0"


@dataclass(frozen=True)
class Preset:
    """Resolution of the phantom and of the session grids.

    Attributes
    ----------
    name : str
        "small" (tests, seconds per subject) or "1mm" (realistic).
    template_resolution : int
        MNI152 template resolution used as the phantom grid (mm).
    zooms : tuple of float
        Voxel size of a 3D session.
    fov_mm : tuple of float
        Field of view of a 3D session (mm).
    thick_zooms : tuple of float
        Voxel size of a 2D thick-slice session.
    lesion_load : LesionLoad
        Lesion numbers and sizes.
    """

    name: str
    template_resolution: int
    zooms: tuple[float, float, float]
    fov_mm: tuple[float, float, float]
    thick_zooms: tuple[float, float, float]
    lesion_load: LesionLoad


PRESETS = {
    "small": Preset("small", 2, (2.5, 2.5, 2.5), (180.0, 215.0, 185.0), (2.0, 2.0, 6.0),
                    LesionLoad(volume_mm3=(60.0, 5000.0), new_volume_mm3=(100.0, 1500.0))),
    "1mm": Preset("1mm", 1, (1.0, 1.0, 1.0), (182.0, 218.0, 182.0), (0.9, 0.9, 3.0), LesionLoad()),
}


@dataclass
class SimulatedSession:
    """One session of a simulated subject, on its native grid.

    Attributes
    ----------
    label : str
        "01", "02", ...
    image : ndarray of float32
        The FLAIR in scanner units (written rounded to int16).
    affine : ndarray
        Voxel-to-scanner matrix.
    protocol : SessionProtocol
        Grid, head pose, gain, gamma, noise level and bias of the session.
    clean : ndarray of float32
        The noise-free, bias-free FLAIR with white matter = 1, before gain and gamma.
    bias : ndarray of float32
        The bias field applied.
    brain_mask, lesion_mask : ndarray of bool
        True brain (intracranial) mask and lesions at this session.
    tissues : dict of ndarray, optional
        "csf", "gm", "wm" fractions on this grid (only with ``keep_tissues=True``).
    lesion_ids : ndarray of uint16, optional
        Each lesion's voxels labelled by its id (subjects of three or more sessions only).
    """

    label: str
    image: np.ndarray
    affine: np.ndarray
    protocol: SessionProtocol
    clean: np.ndarray
    bias: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray
    tissues: dict[str, np.ndarray] | None = None
    lesion_ids: np.ndarray | None = None


@dataclass
class SimulatedSubject:
    """A subject scanned twice, with the ground truth of what changed.

    Attributes
    ----------
    label : str
        Participant label without "sub-".
    group : str
        "NoChange" or "Change".
    sessions : tuple of SimulatedSession
        Baseline (ses-01) and follow-up (ses-02).
    change_dseg : ndarray of uint8
        On the follow-up grid: 1 = new lesion, 2 = enlarging lesion, 0 = no change.
    ses01_to_ses02 : ndarray
        4x4 world-to-world matrix: ses-02 scanner coordinates = M @ ses-01 scanner coordinates
        of the same anatomical point.
    history : LesionHistory
        Every lesion and what happened to it.
    anatomy : AnatomyParams
        How the anatomy was varied.
    """

    label: str
    group: str
    sessions: tuple[SimulatedSession, SimulatedSession]
    change_dseg: np.ndarray
    ses01_to_ses02: np.ndarray
    history: LesionHistory
    anatomy: AnatomyParams

    @property
    def change_mask(self) -> np.ndarray:
        """Return the binary change mask (new or enlarging) on the follow-up grid."""
        return self.change_dseg > 0

    @property
    def n_new(self) -> int:
        """Return the number of new lesions."""
        return self.history.count("new")

    @property
    def n_enlarging(self) -> int:
        """Return the number of enlarging lesions."""
        return self.history.count("enlarging")


def _protocol(rng: np.random.Generator, preset: Preset, effects: RescanEffects, head_pose: np.ndarray,
              thick: bool, vary_fov: bool) -> SessionProtocol:
    """Draw one session's acquisition (every draw is made even if its effect is off)."""
    zooms = preset.thick_zooms if thick else preset.zooms
    fov_factor = rng.uniform(0.95, 1.06, size=3)
    gain, gamma = rng.uniform(0.75, 1.35), rng.uniform(0.85, 1.15)
    noise = rng.uniform(*effects.noise_range)
    bias_seed = int(rng.integers(2**31))
    fov = np.asarray(preset.fov_mm) * (fov_factor if (effects.fov and vary_fov) else 1.0)
    shape = tuple(int(round(f / z)) for f, z in zip(fov, zooms))
    return SessionProtocol(
        zooms=tuple(float(z) for z in zooms), shape=shape, acquisition="2D" if thick else "3D",
        head_pose=head_pose, gain=float(gain) if effects.gain else 1.0,
        gamma=float(gamma) if effects.gain else 1.0, noise_sigma=float(noise) if effects.noise else 0.0,
        bias_seed=bias_seed, bias_amplitude=effects.max_bias * float(rng.uniform(0.5, 1.0)) if effects.bias
        else 0.0)


def simulate_subject(index: int, group: str, seed: int = 0, preset: str = "small",
                     effects: RescanEffects | None = None, label: str | None = None,
                     keep_tissues: bool = False) -> SimulatedSubject:
    """Simulate one subject's two sessions and ground truth in memory.

    Parameters
    ----------
    index : int
        Subject number within the cohort (with ``seed``, fixes every random draw).
    group : str
        "NoChange" or "Change".
    seed : int
        Cohort seed.
    preset : str
        "small" or "1mm" (see ``PRESETS``).
    effects : RescanEffects, optional
        Rescan effects to simulate (default: all on, no thick slices).
    label : str, optional
        Participant label (default: the index, two digits).
    keep_tissues : bool
        Also resample the CSF/GM/WM fractions to each session grid (for realism checks).

    Returns
    -------
    SimulatedSubject
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    effects = effects or RescanEffects()
    config = PRESETS[preset]
    streams = np.random.SeedSequence([int(seed), int(index)]).spawn(6)
    rng_anat, rng_lesion, rng_subject, rng_ses1, rng_ses2, rng_noise = (np.random.default_rng(s) for s in streams)

    tissues = load_template_tissues(config.template_resolution)
    params = AnatomyParams.draw(rng_anat)
    anatomy = make_subject_anatomy(tissues, params, rng_anat)
    history = simulate_lesion_history(anatomy, group == "Change", config.lesion_load, rng_lesion)

    # Head position: centred in the scanner, a random pose at baseline, rigid motion at follow-up.
    head_centre = tissues.brain_centre_mm + np.array([0.0, 0.0, 5.0])
    pose_angles = rng_subject.uniform(-4.0, 4.0, size=3)
    pose_shift = rng_subject.uniform(-3.0, 3.0, size=3)
    motion = random_motion(rng_subject, effects.max_rotation_deg, effects.max_translation_mm)
    thick = bool(rng_subject.random() < effects.thick_slice)
    centring = rigid_matrix(np.eye(3), -head_centre)
    if effects.motion:
        pose1 = rigid_matrix(rotation_matrix(pose_angles), pose_shift) @ centring
    else:
        pose1, motion = centring, np.eye(4)
    pose2 = motion @ pose1
    protocol1 = _protocol(rng_ses1, config, effects, pose1, thick=False, vary_fov=False)
    protocol2 = _protocol(rng_ses2, config, effects, pose2, thick=thick, vary_fov=True)
    noise_seeds = rng_noise.integers(2**31, size=2)

    voxel = anatomy.voxel_mm
    base_flair = anatomy.flair()
    fraction1, contrast1 = render_lesions(history.baseline, anatomy.shape, voxel)
    fraction2, contrast2 = render_lesions(history.followup, anatomy.shape, voxel)
    new_ids = {row["lesion_id"] for row in history.events if row["event"] == "new"}
    fraction_new, _ = render_lesions([les for les in history.followup if les.lesion_id in new_ids],
                                     anatomy.shape, voxel)

    def clean_flair(fraction, contrast):
        return ((base_flair * (1.0 - fraction) + fraction * contrast) * anatomy.texture).astype(np.float32)

    head_support = dilated_support((anatomy.icv + anatomy.skull + anatomy.diploe + anatomy.scalp) > 0)
    lesion_support = dilated_support((fraction1 > 0) | (fraction2 > 0))
    sessions = []
    clean1, brain1, lesions1 = resample_to_session(
        [clean_flair(fraction1, contrast1), anatomy.icv, fraction1], anatomy.affine, protocol1,
        [head_support, head_support, lesion_support])
    image1, bias1 = acquire(clean1, protocol1, int(noise_seeds[0]))
    sessions.append(SimulatedSession("01", image1, protocol1.affine, protocol1, clean1, bias1,
                                     brain1 >= 0.5, lesions1 >= 0.5))
    clean2, brain2, lesions2, baseline_on_2, new_on_2 = resample_to_session(
        [clean_flair(fraction2, contrast2), anatomy.icv, fraction2, fraction1, fraction_new],
        anatomy.affine, protocol2, [head_support] * 2 + [lesion_support] * 3)
    image2, bias2 = acquire(clean2, protocol2, int(noise_seeds[1]))
    sessions.append(SimulatedSession("02", image2, protocol2.affine, protocol2, clean2, bias2,
                                     brain2 >= 0.5, lesions2 >= 0.5))

    if keep_tissues:
        for session in sessions:
            names = ("csf", "gm", "wm")
            maps = resample_to_session([getattr(anatomy, n) for n in names], anatomy.affine, session.protocol,
                                       [head_support] * 3)
            session.tissues = dict(zip(names, maps))

    change = (lesions2 >= 0.5) & (baseline_on_2 < 0.5)
    dseg = np.zeros(protocol2.shape, dtype=np.uint8)
    dseg[change & (new_on_2 >= 0.5)] = 1
    dseg[change & (new_on_2 < 0.5)] = 2
    return SimulatedSubject(label=label or f"{index + 1:02d}", group=group, sessions=tuple(sessions),
                            change_dseg=dseg, ses01_to_ses02=pose2 @ np.linalg.inv(pose1),
                            history=history, anatomy=params)


# --------------------------------------------------------------------------------------------------
# Writing BIDS


def _write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, slice_axis: int | None = None) -> None:
    """Write a NIfTI-1 gzip file whose bytes depend only on ``data`` and ``affine``.

    The gzip header carries no time stamp or file name, and every header field is set here.
    """
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    header = image.header
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"bids_lesionchange-synth"
    if slice_axis is not None:
        header.set_dim_info(slice=slice_axis)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as stream:
        stream.write(image.to_bytes())
    atomic_write_bytes(path, buffer.getvalue())


def _flair_sidecar(protocol: SessionProtocol) -> dict:
    common = {"Manufacturer": "bids_lesionchange-synth", "ManufacturersModelName": "simulated",
              "MagneticFieldStrength": 3, "ReceiveCoilName": "simulated", "ImageType": ["DERIVED", "SIMULATED"]}
    if protocol.acquisition == "2D":
        return {**common, "MRAcquisitionType": "2D", "EchoTime": 0.09, "RepetitionTime": 9.0,
                "InversionTime": 2.5, "FlipAngle": 150, "SliceThickness": protocol.zooms[2],
                "PulseSequenceType": "2D turbo spin echo FLAIR (simulated)"}
    return {**common, "MRAcquisitionType": "3D", "EchoTime": 0.387, "RepetitionTime": 5.0,
            "InversionTime": 1.8, "FlipAngle": 120, "SliceThickness": protocol.zooms[2],
            "PulseSequenceType": "3D turbo spin echo FLAIR (simulated)"}


README_TEXT = """\
Synthetic longitudinal FLAIR cohort written by bids_lesionchange-synth {version}.

Every subject has two sessions (ses-01 baseline, ses-02 follow-up) of a simulated FLAIR with
skull and scalp. Anatomy: the MNI152 ICBM 2009a nonlinear symmetric template (GM/WM maps shipped
in nilearn) deformed at random, with ventricle enlargement and atrophy. Lesions: irregular,
mostly periventricular and deep white matter, some juxtacortical. participants.tsv marks each
subject NoChange (same lesions at both sessions) or Change (new and enlarging lesions at
follow-up). Between sessions: rigid head motion, bias field, gain/contrast, noise level and
field of view differ; some follow-ups may be 2D thick-slice acquisitions.

Ground truth is in derivatives/truth (change masks on the follow-up grid, labelled new/enlarging,
brain and lesion masks per session, and the true rigid transform between sessions).

Command: {command}
"""


_README_TWO_SESSIONS = """\
Every subject has two sessions (ses-01 baseline, ses-02 follow-up) of a simulated FLAIR with
skull and scalp."""
_README_SESSIONS = """\
Every subject has {n} sessions (ses-01 baseline, then follow-ups, each a rescan with its own head
pose, grid, bias, gain and noise) of a simulated FLAIR with skull and scalp. A Change subject's
lesions are new or enlarge at later sessions; its true history (every lesion at every session) is
derivatives/truth/sub-X/anat/sub-X_desc-lesions_history.tsv, each session's lesion ids are in its
desc-lesions_dseg, and each consecutive pair's change is on its later session's grid."""


def _participants_sidecar(n_sessions: int) -> dict:
    if n_sessions == 2:
        return {"participant_id": {"Description": "Participant label"},
                "group": {"Description": "Whether lesions changed between ses-01 and ses-02",
                          "Levels": {"NoChange": "same lesions at both sessions",
                                     "Change": "new and/or enlarging lesions at ses-02"}},
                "n_new": {"Description": "Number of new lesions at ses-02"},
                "n_enlarging": {"Description": "Number of enlarging lesions at ses-02"}}
    last = f"ses-{n_sessions:02d}"
    return {"participant_id": {"Description": "Participant label"},
            "group": {"Description": f"Whether lesions changed between ses-01 and {last}",
                      "Levels": {"NoChange": "same lesions at every session",
                                 "Change": f"new and/or enlarging lesions at ses-02 to {last}"}},
            "n_new": {"Description": f"Number of lesions new at ses-02 to {last}"},
            "n_enlarging": {"Description": f"Number of enlargements at ses-02 to {last} (a lesion that "
                                           "enlarges at two sessions counts twice)"}}


def _check_counts(out_dir: Path, n_nochange: int, n_change: int) -> None:
    if n_nochange < 0 or n_change < 0 or n_nochange + n_change < 1:
        raise InputError(out_dir, "synth", f"asked for {n_nochange} NoChange and {n_change} Change subjects: "
                         "give 0 or more of each and at least one subject in all")


def write_cohort(out_dir: str | Path, n_nochange: int, n_change: int, seed: int = 0, preset: str = "small",
                 effects: RescanEffects | None = None, command: str | None = None, n_sessions: int = 2) -> Path:
    """Simulate a cohort and write it as a BIDS dataset with ground truth in derivatives/truth.

    Parameters
    ----------
    out_dir : str or Path
        Dataset root; created if missing, must not already hold a dataset.
    n_nochange, n_change : int
        Numbers of subjects of each group (NoChange subjects are numbered first).
    seed : int
        Seed: the same seed, counts, preset and effects give identical files.
    preset : str
        "small" or "1mm".
    effects : RescanEffects, optional
        Rescan effects (default: all on, no thick slices).
    command : str, optional
        Command line recorded in the README.
    n_sessions : int
        Sessions per subject. 2 (default): ses-01 and ses-02 as above. 3 or more
        (:mod:`.longitudinal`): ses-01 .. ses-N, a Change subject's lesions new or enlarging at
        later sessions, the truth of every consecutive pair on its later session's grid, each
        session's lesion ids (``desc-lesions_dseg``) and the subject's
        ``anat/sub-X_desc-lesions_history.tsv``.

    Returns
    -------
    Path
        The dataset root.
    """
    out_dir = Path(out_dir)
    _check_counts(out_dir, n_nochange, n_change)
    if preset not in PRESETS:
        raise InputError(None, "synth", f"unknown preset '{preset}': choose one of {', '.join(sorted(PRESETS))}")
    if isinstance(n_sessions, bool) or not isinstance(n_sessions, (int, np.integer)) or n_sessions < 2:
        raise InputError(None, "synth", f"asked for {n_sessions!r} sessions: give a whole number of 2 or more")
    if (out_dir / "dataset_description.json").exists():
        raise InputError(out_dir, "synth", "already holds a dataset: choose a new or empty directory")
    effects = effects or RescanEffects()
    many = n_sessions > 2
    truth_dir = out_dir / "derivatives" / "truth"
    n_total = n_nochange + n_change
    width = max(2, len(str(n_total)))
    groups = ["NoChange"] * n_nochange + ["Change"] * n_change
    generated_by = [{"Name": "bids_lesionchange-synth", "Version": __version__,
                     "Description": f"preset={preset} seed={seed} effects={effects}"
                                    + (f" sessions={n_sessions}" if many else "")}]

    atomic_write_json(out_dir / "dataset_description.json", {
        "Name": "bids_lesionchange synthetic longitudinal FLAIR cohort", "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw", "License": "CC0", "Authors": ["bids_lesionchange developers"],
        "GeneratedBy": generated_by,
        "HowToAcknowledge": "Anatomy from the MNI152 ICBM 2009a template (Fonov et al. 2011) as shipped in nilearn."})
    command = command or (f"write_cohort(n_nochange={n_nochange}, n_change={n_change}, seed={seed}, "
                          f"preset={preset!r}" + (f", n_sessions={n_sessions})" if many else ")"))
    readme = README_TEXT.format(version=__version__, command=command)
    if many:
        readme = readme.replace(_README_TWO_SESSIONS, _README_SESSIONS.format(n=n_sessions))
    atomic_write_text(out_dir / "README", readme)
    atomic_write_text(out_dir / "CHANGES", f"1.0.0 synthetic\n  - Generated by bids_lesionchange-synth {__version__}.\n")
    atomic_write_json(out_dir / "participants.json", _participants_sidecar(n_sessions))
    atomic_write_json(truth_dir / "dataset_description.json", {
        "Name": "Ground truth of the synthetic cohort", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
        "GeneratedBy": generated_by, "SourceDatasets": [{"URL": "../.."}]})
    _write_tsv(truth_dir / "desc-change_dseg.tsv", ["index", "name"], [[1, "new"], [2, "enlarging"]])

    rows = []
    for index, group in enumerate(groups):
        label = f"{index + 1:0{width}d}"
        if many:
            from bids_lesionchange.simulate.longitudinal import (simulate_longitudinal_subject,
                                                                 write_longitudinal_subject)

            subject = simulate_longitudinal_subject(index, group, n_sessions, seed=seed, preset=preset,
                                                    effects=effects, label=label)
            write_longitudinal_subject(out_dir, truth_dir, subject)
        else:
            subject = simulate_subject(index, group, seed=seed, preset=preset, effects=effects, label=label)
            _write_subject(out_dir, truth_dir, subject)
        rows.append([f"sub-{label}", group, subject.n_new, subject.n_enlarging])
        LOGGER.info("sub-%s (%s): %d new, %d enlarging lesions", label, group, subject.n_new, subject.n_enlarging)
    _write_tsv(out_dir / "participants.tsv", ["participant_id", "group", "n_new", "n_enlarging"], rows)
    return out_dir


def _write_subject(out_dir: Path, truth_dir: Path, subject: SimulatedSubject) -> None:
    sub = f"sub-{subject.label}"
    for session in subject.sessions:
        write_session_files(out_dir, truth_dir, sub, session)
    baseline, follow = subject.sessions
    if subject.group == "Change":
        write_change_truth(truth_dir, sub, follow, subject.change_dseg)
    write_transform_truth(truth_dir, sub, baseline, follow, subject.ses01_to_ses02, subject.history.events)


def write_session_files(out_dir: Path, truth_dir: Path, sub: str, session: SimulatedSession) -> None:
    """Write one session's FLAIR and sidecar, and its true brain and lesion masks (and lesion ids)."""
    ses = f"ses-{session.label}"
    stem = f"{sub}_{ses}"
    anat = out_dir / sub / ses / "anat"
    scanner = np.clip(np.rint(session.image), 0, np.iinfo(np.int16).max).astype(np.int16)
    slice_axis = 2 if session.protocol.acquisition == "2D" else None
    write_nifti(anat / f"{stem}_FLAIR.nii.gz", scanner, session.affine, slice_axis)
    atomic_write_json(anat / f"{stem}_FLAIR.json", _flair_sidecar(session.protocol))
    source = [f"bids::{sub}/{ses}/anat/{stem}_FLAIR.nii.gz"]
    truth_anat = truth_dir / sub / ses / "anat"
    write_nifti(truth_anat / f"{stem}_desc-brain_mask.nii.gz", session.brain_mask.astype(np.uint8),
                session.affine)
    atomic_write_json(truth_anat / f"{stem}_desc-brain_mask.json",
                      {"Type": "Brain", "Sources": source,
                       "Description": "True intracranial brain mask on this session's native grid"})
    write_nifti(truth_anat / f"{stem}_desc-lesions_mask.nii.gz", session.lesion_mask.astype(np.uint8),
                session.affine)
    atomic_write_json(truth_anat / f"{stem}_desc-lesions_mask.json",
                      {"Type": "Lesion", "Sources": source,
                       "Description": "All lesions present at this session, on its native grid"})
    if session.lesion_ids is not None:
        write_nifti(truth_anat / f"{stem}_desc-lesions_dseg.nii.gz", session.lesion_ids, session.affine)
        atomic_write_json(truth_anat / f"{stem}_desc-lesions_dseg.json",
                          {"Sources": source,
                           "Description": "Each lesion present at this session labelled by its lesion_id in the "
                                          "subject's desc-lesions_history.tsv (0 = no lesion), on its native grid"})
        ids = sorted(int(v) for v in np.unique(session.lesion_ids) if v > 0)
        _write_tsv(truth_anat / f"{stem}_desc-lesions_dseg.tsv", ["index", "name"],
                   [[i, f"lesion-{i}"] for i in ids])


def write_change_truth(truth_dir: Path, sub: str, follow: SimulatedSession, change_dseg: np.ndarray,
                       since: str | None = None) -> None:
    """Write a pair's true change mask and new/enlarging labels on its follow-up's grid.

    ``since`` (the baseline label) is named in the descriptions when given (sessions beyond two).
    """
    stem = f"{sub}_ses-{follow.label}"
    truth_anat = truth_dir / sub / f"ses-{follow.label}" / "anat"
    source = [f"bids::{sub}/ses-{follow.label}/anat/{stem}_FLAIR.nii.gz"]
    after = f" since ses-{since}" if since else ""
    write_nifti(truth_anat / f"{stem}_desc-change_mask.nii.gz", (change_dseg > 0).astype(np.uint8),
                follow.affine)
    atomic_write_json(truth_anat / f"{stem}_desc-change_mask.json",
                      {"Type": "Lesion", "Sources": source,
                       "Description": f"New or enlarged lesion voxels at ses-{follow.label}{after} (union), "
                                      f"ses-{follow.label} native grid"})
    write_nifti(truth_anat / f"{stem}_desc-change_dseg.nii.gz", change_dseg, follow.affine)
    atomic_write_json(truth_anat / f"{stem}_desc-change_dseg.json",
                      {"Sources": source, "Description": f"1 = new lesion, 2 = enlarging lesion (enlarged part){after}"})
    _write_tsv(truth_anat / f"{stem}_desc-change_dseg.tsv", ["index", "name"], [[1, "new"], [2, "enlarging"]])


def write_transform_truth(truth_dir: Path, sub: str, first: SimulatedSession, second: SimulatedSession,
                          matrix: np.ndarray, lesions: list[dict]) -> None:
    """Write the true rigid transform from one session's scanner world to another's, with the sidecar
    that records both sessions' simulated effects and the pair's lesion events."""
    a, b = first.label, second.label
    xfm_stem = truth_dir / sub / "anat" / f"{sub}_from-ses{a}_to-ses{b}_mode-image_xfm"
    atomic_write_text(xfm_stem.with_suffix(".txt"), "\n".join(" ".join(f"{v:.10f}" for v in row) for row in matrix) + "\n")
    atomic_write_json(xfm_stem.with_suffix(".json"), {
        "Description": (f"True rigid head motion between sessions as a 4x4 world-to-world matrix M: for an "
                        f"anatomical point with ses-{a} scanner (RAS mm) coordinates x1, its ses-{b} scanner "
                        f"coordinates are x2 = M @ [x1, 1]. To resample the ses-{b} image onto the ses-{a} grid, "
                        f"sample ses-{b} at M @ x1 for every ses-{a} voxel centre x1; inv(M) maps ses-{b} "
                        f"coordinates to ses-{a}."),
        "FromWorld": f"ses-{a} scanner coordinates (RAS, mm, the ses-{a} NIfTI affine's output space)",
        "ToWorld": f"ses-{b} scanner coordinates (RAS, mm, the ses-{b} NIfTI affine's output space)",
        "Sources": [f"bids::{sub}/ses-{a}/anat/{sub}_ses-{a}_FLAIR.nii.gz",
                    f"bids::{sub}/ses-{b}/anat/{sub}_ses-{b}_FLAIR.nii.gz"],
        "SimulatedRescanEffects": {
            f"ses-{s.label}": {"Gain": p.gain, "Gamma": p.gamma, "NoiseSigmaRelativeToWM": p.noise_sigma,
                               "BiasAmplitude": p.bias_amplitude, "VoxelSize": list(p.zooms),
                               "MatrixSize": list(p.shape), "MRAcquisitionType": p.acquisition}
            for s, p in ((first, first.protocol), (second, second.protocol))},
        "Lesions": lesions,
    })
