#!/usr/bin/env bash
# Run every benchmark in sequence; each writes benchmarks/results/NAME.json and NAME.md.
#
#   benchmarks/run_all.sh                 # everything (~1.5 h on 2 cores, most of it the ablation)
#   ONLY="accuracy end_to_end" benchmarks/run_all.sh
#   ABLATION_ARGS="--iterations 40 --pairs-per-iteration 20" benchmarks/run_all.sh   # full ablation budget
#
# Needs the default model in bids_lesionchange/data/default_model. The ablation also needs the
# preprocessed NoChange pairs and the VAE checkpoint of a `group --mode train` run
# (ABLATION_ARGS="--pairs-dir OUT --vae-checkpoint WORK/training/vae"; defaults: /work/train_default).
# Scratch data goes to $BENCH_ROOT (default /tmp/bids_lesionchange_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ROOT=${BENCH_ROOT:-/tmp/bids_lesionchange_bench}
ONLY=${ONLY:-"synth_cohort input_checks preprocessing training inference layers real_flair separate_strip lesion_growth precision mirroring skullstrip_precision skullstrip_crop denormals adaptation accuracy accuracy_thick preexisting_floor real_anatomy end_to_end ablation"}
export TF_ENABLE_ONEDNN_OPTS=1 TF_CPP_MIN_LOG_LEVEL=2

run() { echo "== $*" >&2; /usr/bin/time -f "== %e s wall, %M KB max RSS" "$@"; }

for name in $ONLY; do
  case $name in
    synth_cohort)  run "$PYTHON" benchmarks/synth_cohort.py
                   "$PYTHON" benchmarks/tables.py synth_cohort ;;
    preprocessing) run "$PYTHON" benchmarks/preprocessing.py --method threshold
                   run "$PYTHON" benchmarks/preprocessing.py --method hdbet
                   run "$PYTHON" benchmarks/preprocessing.py --real
                   "$PYTHON" benchmarks/tables.py preprocessing ;;
    training)      run "$PYTHON" benchmarks/training.py
                   "$PYTHON" benchmarks/tables.py training ;;
    inference)     run "$PYTHON" benchmarks/inference.py --configs cpu unet-bce
                   "$PYTHON" benchmarks/tables.py inference ;;
    layers)        run "$PYTHON" benchmarks/layers.py ;;
    accuracy)      run "$PYTHON" benchmarks/accuracy.py --root "$ROOT" ;;
    real_flair)    run "$PYTHON" benchmarks/real_flair.py --root "$ROOT/real_flair" ;;
    separate_strip) run "$PYTHON" benchmarks/separate_strip.py --root "$ROOT/separate_strip" ;;
    lesion_growth) run "$PYTHON" benchmarks/lesion_growth.py --results real_flair --root "$ROOT/real_flair" ;;
    precision)     run "$PYTHON" benchmarks/precision.py --outputs "$ROOT/real_flair/out-default_model" \
                     --reference "$ROOT/real_flair/bids/derivatives/reference"
                   run "$PYTHON" benchmarks/precision.py --variant polyphase --name polyphase \
                     --outputs "$ROOT/real_flair/out-default_model" \
                     --reference "$ROOT/real_flair/bids/derivatives/reference" ;;
    preexisting_floor) run "$PYTHON" benchmarks/preexisting_floor.py --real-flair "$ROOT/real_flair/out-default_model" \
                     --accuracy "$ROOT/accuracy" "$ROOT/accuracy_thick" ;;
    mirroring)     run "$PYTHON" benchmarks/mirroring.py --outputs "$ROOT/real_flair/out-default_model" \
                     --reference "$ROOT/real_flair/bids/derivatives/reference" ;;
    input_checks)  run "$PYTHON" benchmarks/input_checks.py ;;
    skullstrip_precision) run "$PYTHON" benchmarks/skullstrip_precision.py ;;
    skullstrip_crop) run "$PYTHON" benchmarks/skullstrip_crop.py ;;
    denormals)     run "$PYTHON" benchmarks/denormals.py ;;
    adaptation)    run "$PYTHON" benchmarks/adaptation.py --root "$ROOT/real_flair" ;;
    accuracy_thick) run "$PYTHON" benchmarks/accuracy.py --root "$ROOT" --name accuracy_thick --thick-slice 0.5 ;;
    real_anatomy)  run "$PYTHON" benchmarks/real_anatomy.py --root "$ROOT/real_anatomy" ;;
    end_to_end)    run "$PYTHON" benchmarks/end_to_end.py --root "$ROOT" ;;
    ablation)      # shellcheck disable=SC2086
                   run "$PYTHON" benchmarks/ablation.py --root "$ROOT" ${ABLATION_ARGS:-} ;;
    *) echo "unknown benchmark '$name'" >&2; exit 2 ;;
  esac
done
