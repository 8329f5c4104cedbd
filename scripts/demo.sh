#!/usr/bin/env bash
# One-command demo: write a small synthetic Change cohort, detect change with the shipped model,
# and print where the reports and change masks are. Usage: scripts/demo.sh [OUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-demo_out}
. .venv/bin/activate
export TF_ENABLE_ONEDNN_OPTS=1 TF_CPP_MIN_LOG_LEVEL=2
# seed 1234 was never used to train the shipped model
[ -f "$ROOT/bids/dataset_description.json" ] || \
  bids_lesionchange-synth "$ROOT/bids" --n-nochange 0 --n-change 2 --seed 1234 --preset 1mm
bids_lesionchange "$ROOT/bids" "$ROOT/derivatives" participant --mode infer \
  --reference-dir "$ROOT/bids/derivatives/truth" --work-dir "$ROOT/work" --nprocs 2 --omp-nthreads 2
bids_lesionchange "$ROOT/bids" "$ROOT/derivatives" group --mode evaluate --skip-bids-validation
echo
echo "Reports:      $(ls "$ROOT"/derivatives/sub-*.html | tr '\n' ' ')"
echo "Change masks: $(ls "$ROOT"/derivatives/sub-*/ses-*/anat/*desc-change_mask.nii.gz | tr '\n' ' ')"
echo "Group metrics: $ROOT/derivatives/group_desc-evaluation_metrics.tsv"
