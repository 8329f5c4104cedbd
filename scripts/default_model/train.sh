#!/usr/bin/env bash
# Train the shipped model (bids_lesionchange/data/default_model, v8) from scratch: synthetic subjects
# plus self-pairs of real FLAIRs (docs/benchmarks.md, section 0), with lesion-like SuperMix, in two
# stages in one work directory: train.toml (1000 detector steps), then finetune.toml (resumes at
# step 1000 and trains 1000 more with smaller synthetic lesions).
#
#   bash scripts/default_model/train.sh [WORK_ROOT]      # needs ../shared/data; 1 h 33 min on 2 cores (AMD Zen 4)
#
# Disk: WORK_ROOT/work keeps every pair's intermediates uncompressed, 0.3-1 GB per pair (31 pairs here);
# with --self-pairs 6 (46 pairs) it had written 20 GB when its disk filled (stop 43). Put WORK_ROOT on a
# disk with 25 GB or more free; the app warns at the start when it looks short.
#
# Training material (all NoChange):
#   - 4 synthetic subjects with two sessions (bids_lesionchange-synth, 1 mm, half of the follow-ups
#     thick-slice 2D), each also giving 4 self-pairs;
#   - 3 real single FLAIRs whose licenses allow it, 4 self-pairs each (simulated rescans, --self-pairs):
#     patient 26 of Lesjak et al. 2018 (CC-BY 4.0), synthsr-example (Apache-2.0),
#     tcga-fg-6692 (TCIA, CC BY 3.0).
#   Held out of training on purpose: niivue-demo (a real FLAIR texture never seen, for the
#   benchmarks) and the NonCommercial NIH pair (test-only by its license).
# The shipped weights were made by these two commands' training stages on the preprocessed pairs and
# the VAE of an earlier run of them (same hyper-parameters and seed; see the model card's provenance).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DATA="$REPO/../shared/data"
ROOT="${1:-/tmp/bids_lesionchange_default_model}"
mkdir -p "$ROOT" && cd "$ROOT"
for f in ms-flair-patient26/FLAIR.nii.gz real-flair-singles/synthsr-example_FLAIR.nii.gz \
         real-flair-singles/tcga-fg-6692_FLAIR.nii.gz; do
  [ -f "$DATA/$f" ] || { echo "missing $DATA/$f (the shared real FLAIRs)"; exit 2; }
done
if [ ! -f nochange_bids/dataset_description.json ]; then
  bids_lesionchange-synth nochange_bids --n-nochange 4 --n-change 0 --preset 1mm --thick-slice 0.5 --seed 4242
  for pair in "p26 ms-flair-patient26/FLAIR.nii.gz" "synthsr real-flair-singles/synthsr-example_FLAIR.nii.gz" \
              "tcga real-flair-singles/tcga-fg-6692_FLAIR.nii.gz"; do
    set -- $pair
    mkdir -p "nochange_bids/sub-$1/ses-01/anat"
    cp "$DATA/$2" "nochange_bids/sub-$1/ses-01/anat/sub-$1_ses-01_FLAIR.nii.gz"
    printf "sub-%s\tNoChange\tn/a\tn/a\n" "$1" >> nochange_bids/participants.tsv
  done
fi
cp "$REPO/scripts/default_model/train.toml" "$REPO/scripts/default_model/finetune.toml" .
bids_lesionchange nochange_bids out group --mode train --self-pairs 4 -w work --nprocs 2 --seed 2026 \
  --config train.toml
# stage 2: the same work dir, so training resumes from stage 1's checkpoints (iteration 100 of 200)
bids_lesionchange nochange_bids out group --mode train --self-pairs 4 -w work --nprocs 2 --seed 2026 \
  --config finetune.toml
echo "model written to $ROOT/out/model; measure it with: python $REPO/benchmarks/real_flair.py --model $ROOT/out/model"
