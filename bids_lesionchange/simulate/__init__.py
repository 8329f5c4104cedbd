"""Synthetic longitudinal FLAIR data with ground truth (tests, demo, training, benchmarks).

Public API (see :mod:`.cohort`):

- ``write_cohort(out_dir, n_nochange, n_change, seed=0, preset="small", effects=RescanEffects(),
  n_sessions=2)`` writes a BIDS dataset plus ``derivatives/truth`` and returns its root.
- ``simulate_subject(index, group, seed=0, preset="small", effects=None)`` returns one
  :class:`~.cohort.SimulatedSubject` in memory.
- :class:`~.acquisition.RescanEffects` switches motion, bias, gain/contrast, noise, field of view
  and thick-slice follow-ups on or off.

Modules: ``anatomy`` (MNI152 template to subject, skull and scalp), ``lesions`` (irregular
lesions and their evolution), ``acquisition`` (pose, grid, partial volume, bias, noise),
``sampling`` (fast trilinear helpers), ``cohort`` (subjects and BIDS writing), ``longitudinal``
(three or more sessions with known lesion histories), ``phantom`` (an analytic FLAIR-like head
moved by a known rigid motion, for tests and benchmarks), ``rescan`` (simulated rescans of a
real FLAIR) and ``selfpairs`` (NoChange self-pairs written from them).
"""
