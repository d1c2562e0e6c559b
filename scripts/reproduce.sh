#!/usr/bin/env bash
# The real run: Kaggle folder -> outlier screen -> records -> members -> ONE ensemble model
# -> held-out and native-size evaluation -> submission. Every stage skips what is done, so
# re-running resumes after an interruption. Usage: bash scripts/reproduce.sh [KAGGLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/kaggle200}
NATIVE=${NATIVE:-../shared/data/kaggle_native/train}
RUNS=${RUNS:-runs}
MEMBERS=${MEMBERS:-"efficientnet_lite0 efficientnet_lite1 efficientnet_lite2"}
TRAIN_FLAGS=${TRAIN_FLAGS:-"--epochs1=40 --epochs2=0 --lr1=1e-3 --dropout=0.3 --batch_size=64 --patience=6"}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$RUNS"
stage() { echo; echo "=== $(date +%H:%M:%S) $*"; }
t0=$(date +%s)

# 10 folds: fold0+fold1 are held out (reported, never trained or tuned on), fold2 tunes
# (early stopping, ensemble weights, temperature), fold3..fold9 train.
HELDOUT=fold0+fold1
TUNE=fold2
TRAIN=fold3+fold4+fold5+fold6+fold7+fold8+fold9

stage "1/6 outlier screen (ImageNet top-30 without cat/dog) -> $RUNS/outliers"
[ -f "$RUNS/outliers/summary.json" ] || python -m catdog_tf.outliers --images="$DATA/train" --out="$RUNS/outliers"

stage "2/6 records: reviewed exclusions (data/exclude_reviewed.txt) + the native-size ids"
{
  cat data/exclude_reviewed.txt
  echo "# kaggle_native ids: kept out of training to evaluate on native sizes"
  (cd "$NATIVE" && ls | sed 's/\.jpg$//')
} > "$RUNS/exclude.txt"
python -m catdog_tf.records --input="$DATA/train" --input="$DATA/test" --out="$RUNS/records" \
  --folds=10 --seed=0 --exclude="$RUNS/exclude.txt"

stage "3/6 members: $MEMBERS"
for b in $MEMBERS; do
  python -m catdog_tf.train --backbone="$b" --records="$RUNS/records" --model_dir="$RUNS/$b" \
    --train_split=$TRAIN --val_split=$TUNE --cache_dir="$RUNS/cache" \
    $TRAIN_FLAGS
done

stage "4/6 combine the members, both ways, tuned on $TUNE; the better one on $TUNE is exported"
if [ ! -f "$RUNS/ensemble/model.keras" ]; then  # weighted average of the members' P(dog)
  python -m catdog_tf.ensemble $(for b in $MEMBERS; do echo "--member=$RUNS/$b"; done) \
    --records="$RUNS/records" --split=$TUNE --out="$RUNS/ensemble"
fi
if [ ! -f "$RUNS/fusion/model.keras" ]; then  # one logistic head on the concatenated features
  python -m catdog_tf.ensemble --fuse="$(echo $MEMBERS | tr ' ' ',')" --records="$RUNS/records" \
    --train_split=$TRAIN --split=$TUNE --cache_dir="$RUNS/cache" --out="$RUNS/fusion"
fi
if [ ! -f "$RUNS/final/model.keras" ]; then
  best=$(python - "$RUNS" <<'PY'
import json, sys
runs = sys.argv[1]
e = json.load(open(f"{runs}/ensemble/ensemble.json"))["log_loss"]
f = json.load(open(f"{runs}/fusion/fusion.json"))["val_log_loss"]
print("fusion" if f < e else "ensemble")
PY
)
  echo "exporting $best as the final model"
  mkdir -p "$RUNS/final" && cp "$RUNS/$best/model.keras" "$RUNS/final/model.keras" && echo "$best" > "$RUNS/final/SOURCE"
fi

stage "5/6 evaluate the exported model: held-out $HELDOUT and native sizes"
[ -f "$RUNS/final/heldout.json" ] || python -m catdog_tf.evaluate --model="$RUNS/final/model.keras" \
  --records="$RUNS/records" --split=$HELDOUT --json_out="$RUNS/final/heldout.json"
[ -f "$RUNS/final/native.json" ] || python -m catdog_tf.evaluate --model="$RUNS/final/model.keras" \
  --images="$NATIVE" --json_out="$RUNS/final/native.json"

stage "6/6 submission"
[ -f "$RUNS/final/submission.csv" ] || python -m catdog_tf.predict --model="$RUNS/final/model.keras" \
  --images="$DATA/test" --out="$RUNS/final/submission.csv"
echo "done in $(( ($(date +%s) - t0) / 60 )) min: $RUNS/final/{model.keras,heldout.json,native.json,submission.csv}"
