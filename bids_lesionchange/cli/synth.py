"""``bids_lesionchange-synth``: write a synthetic longitudinal FLAIR cohort as a BIDS dataset."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from bids_lesionchange.cli.parser import int_at_least, number_between

LOGGER = logging.getLogger("bids_lesionchange.synth")

EPILOG = """\
examples:
  bids_lesionchange-synth /data/synth --n-nochange 4 --n-change 2 --seed 1
  bids_lesionchange-synth /tmp/tiny --n-nochange 1 --n-change 1 --preset small --no-motion --no-noise
  bids_lesionchange-synth /data/synth1mm --n-nochange 8 --n-change 8 --preset 1mm --thick-slice 0.5
  bids_lesionchange-synth /tmp/three --n-nochange 0 --n-change 1 --sessions 3 --seed 2

Ground truth is written to OUT_DIR/derivatives/truth (change masks, brain and lesion masks,
the true rigid transform between sessions). With --sessions 3 or more, each consecutive pair's
change masks are on its later session's grid, each session has a lesion id image
(desc-lesions_dseg), and sub-X/anat/sub-X_desc-lesions_history.tsv gives every lesion's history
(session of appearance, state and volume at every session).
"""


_count = int_at_least(0)
_sessions = int_at_least(2)
_fraction = number_between(0.0, 1.0, inclusive=True)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``bids_lesionchange-synth``."""
    parser = argparse.ArgumentParser(
        prog="bids_lesionchange-synth",
        description="Write a synthetic longitudinal FLAIR cohort (NoChange and Change subjects, two "
                    "sessions each unless --sessions says more) as a BIDS dataset, with the ground "
                    "truth in derivatives/truth.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="new or empty directory to write")
    parser.add_argument("--n-nochange", type=_count, default=2, help="subjects without change (default 2)")
    parser.add_argument("--n-change", type=_count, default=2,
                        help="subjects with new/enlarging lesions at follow-up (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--preset", choices=("small", "1mm"), default="small",
                        help="'small': ~2.5 mm, seconds per subject; '1mm': realistic 1 mm (default small)")
    parser.add_argument("--sessions", type=_sessions, default=2, metavar="N",
                        help="sessions per subject (default 2). With 3 or more, a Change subject's lesions "
                             "are new at a later session, enlarge at a later session or stay stable, every "
                             "session is a rescan with its own motion, grid, bias, gain and noise, and the "
                             "truth of every consecutive pair and each lesion's history are written")
    effects = parser.add_argument_group("rescan effects (all on by default)")
    effects.add_argument("--no-motion", action="store_true", help="no rigid head motion between sessions")
    effects.add_argument("--no-bias", action="store_true", help="no bias field")
    effects.add_argument("--no-gain", action="store_true", help="same gain and contrast at both sessions")
    effects.add_argument("--no-noise", action="store_true", help="no Rician noise")
    effects.add_argument("--no-fov", action="store_true", help="same field of view at both sessions")
    effects.add_argument("--thick-slice", type=_fraction, default=0.0, metavar="FRACTION",
                         help="fraction of subjects whose follow-up is a 2D thick-slice FLAIR "
                              "(0.9x0.9x3 mm at 1mm; default 0); with --sessions 3 or more, the chance "
                              "of each later session")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (usage errors exit 2 with a sentence saying how to fix)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_nochange + args.n_change < 1:
        parser.error("no subjects asked for: give --n-nochange and/or --n-change of 1 or more")
    if (args.out_dir / "dataset_description.json").exists():
        parser.error(f"{args.out_dir} already holds a dataset: choose a new or empty directory")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"{args.out_dir} is a file: give a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``bids_lesionchange-synth``; return the exit code (0 ok, 1 failed, 2 usage)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s", datefmt="%y%m%d-%H:%M:%S")
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.simulate.acquisition import RescanEffects
    from bids_lesionchange.simulate.cohort import write_cohort

    effects = RescanEffects(motion=not args.no_motion, bias=not args.no_bias, gain=not args.no_gain,
                            noise=not args.no_noise, fov=not args.no_fov, thick_slice=args.thick_slice)
    command = shlex.join(["bids_lesionchange-synth", *(sys.argv[1:] if argv is None else argv)])
    try:
        out = write_cohort(args.out_dir, args.n_nochange, args.n_change, seed=args.seed, preset=args.preset,
                           effects=effects, command=command, n_sessions=args.sessions)
    except InputError as err:
        LOGGER.error("%s", err)
        return 1
    LOGGER.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
