#!/usr/bin/env bash
# The real run: Kaggle folder -> outlier screen -> records -> members -> ONE ensemble model ->
# held-out and native-size evaluation -> submission -> serving export. Every stage skips what is
# done, so re-running resumes after an interruption. Usage: bash scripts/reproduce.sh [KAGGLE_DIR]
#
# Settings (environment variables; defaults in brackets):
#   PRESET   the recipe, a file in catdog_tf/presets/ (`python -m catdog_tf.presets` lists them) [cpu]:
#            cpu   the shipped one: EfficientNet-Lite members with k-fold heads, offline
#            seed  Xception, InceptionV3 and ResNet50 fine-tuned in two stages (Keras weights: online)
#   MEMBERS  the ensemble's members, NAME or NAME@INPUT_SIZE, space-separated [the preset's]
#   FLAGS    extra flags of every member's run, after the preset's (the last of a flag wins;
#            write them as --flag=value) []
#   STUDENT  a student preset (e.g. student): after the ensemble, one backbone distilled from its
#            out-of-fold and test predictions -> $RUNS/student/model.keras, evaluated like the
#            ensemble, exported to $RUNS/export_student (k-fold presets only) [none: skipped]
#   STUDENT_FLAGS  extra flags of the student's run, after its preset's []
#   NATIVE   folder of native-size labeled photos, kept out of training and evaluated at the end
#            [../shared/data/kaggle_native/train]; missing: that evaluation is skipped, with a line
#   RUNS     output folder [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/kaggle200}
NATIVE=${NATIVE:-../shared/data/kaggle_native/train}
RUNS=${RUNS:-runs}
PRESET=${PRESET:-cpu}
if [ -n "${POOLING+x}${KFOLD_FLAGS+x}" ]; then
  echo "error: POOLING and KFOLD_FLAGS are replaced by PRESET and FLAGS (e.g. FLAGS=--pooling=avg)" >&2; exit 2
fi
preset=$(python -m catdog_tf.presets --shell "$PRESET")
eval "$preset"
if [ "$PRESET_KIND" != ensemble ]; then
  echo "error: PRESET=$PRESET is a $PRESET_KIND preset: run it with STUDENT=$PRESET beside an ensemble preset" >&2; exit 2
fi
STUDENT=${STUDENT:-}
if [ -n "$STUDENT" ]; then  # checked before any work
  student=$(python -m catdog_tf.presets --shell "$STUDENT" | sed 's/^PRESET_/STUDENT_PRESET_/')
  eval "$student"
  if [ "$STUDENT_PRESET_KIND" != student ] || [ "$PRESET_TOOL" != kfold ]; then
    echo "error: STUDENT=$STUDENT needs a student preset and a k-fold PRESET (its soft targets are the ensemble's out-of-fold predictions)" >&2; exit 2
  fi
fi
MEMBERS=${MEMBERS:-$PRESET_MEMBERS}
FLAGS=${FLAGS:-}
# Member folders are named by pooling when it is not the average (the last --pooling given wins).
POOLING=$(printf '%s\n' $PRESET_FLAGS $FLAGS | sed -n 's/^--pooling=//p' | tail -n 1)
POOLING=${POOLING:-avg}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$RUNS"
stage() { echo; echo "=== $(date +%H:%M:%S) $*"; }
t0=$(date +%s)

# 10 folds: fold0+fold1 are held out (reported once, through the exported model; never
# trained or tuned on); fold2..fold9 are the k-fold set: 8 heads per member, each trained on
# 7 folds and predicting the 8th, so every photo there gets an out-of-fold prediction.
HELDOUT=fold0+fold1
KFOLDS=fold2,fold3,fold4,fold5,fold6,fold7,fold8,fold9
# Feature caches in two files per backbone, flips included (caching only; any grouping gives
# the same features).
CACHE_GROUPS=fold2,fold3+fold4+fold5+fold6+fold7+fold8+fold9
# Members that fine-tune (tool train) learn on fold2..fold8 and stop early on fold9.
TRAIN_FOLDS=fold2+fold3+fold4+fold5+fold6+fold7+fold8
VAL_FOLD=fold9

stage "1/7 outlier screen (ImageNet top-30 without cat/dog) -> $RUNS/outliers"
[ -f "$RUNS/outliers/summary.json" ] || python -m catdog_tf.outliers --images="$DATA/train" --out="$RUNS/outliers"

# The exclusion list keeps photos out of TRAINING only: they stay in their folds, so the held-out
# and out-of-fold figures cover every photo, as a Kaggle test set would (cleaned figures beside).
stage "2/7 records: reviewed exclusions (data/exclude_reviewed.txt) + the native-size ids, kept out of training"
{
  cat data/exclude_reviewed.txt
  if [ -d "$NATIVE" ]; then
    echo "# kaggle_native ids: kept out of training to evaluate on native sizes"
    (cd "$NATIVE" && ls | sed 's/\.jpg$//')
  fi
} > "$RUNS/exclude.txt"
[ -d "$NATIVE" ] || echo "no native-size folder $NATIVE (set NATIVE=...): its evaluation in stage 5 is skipped"
python -m catdog_tf.records --input="$DATA/train" --input="$DATA/test" --out="$RUNS/records" \
  --folds=10 --seed=0 --exclude="$RUNS/exclude.txt"

stage "3/7 $PRESET_TOOL members: $MEMBERS"
dirs=()
for m in $MEMBERS; do
  name=${m%@*}; size=""; dir="$RUNS/$PRESET_TOOL/$name"
  if [[ $m == *@* ]]; then size="--image_size=${m#*@}"; dir="$RUNS/$PRESET_TOOL/${name}_${m#*@}"; fi
  [ "$POOLING" = avg ] || dir="${dir}_$POOLING"
  if [ "$PRESET_TOOL" = kfold ]; then
    python -m catdog_tf.kfold --backbone="$name" $size --records="$RUNS/records" --folds=$KFOLDS \
      --cache_groups=$CACHE_GROUPS --cache_dir="$RUNS/cache" --out="$dir" $PRESET_FLAGS $FLAGS
  else  # two stages on fold2..fold8, early stopping and the ensemble's fit on fold9
    python -m catdog_tf.train --backbone="$name" $size --records="$RUNS/records" --train_split=$TRAIN_FOLDS \
      --val_split=$VAL_FOLD --cache_dir="$RUNS/cache" --out="$dir" $PRESET_FLAGS $FLAGS
  fi
  dirs+=("--member=$dir")
done

stage "4/7 ensemble: weights, averaging space and temperature (k-fold members: or the ImageNet-mass hedge) fitted"
# Redone (with everything after it) when the members changed since the last run: another list,
# or a member redone (new records or settings: its kfold.json or flags.json changes with it).
members_key="${dirs[*]} $(for d in "${dirs[@]}"; do cat "${d#--member=}"/{kfold,flags}.json 2>/dev/null || true; done | sha256sum | cut -c1-16)"
if [ ! -f "$RUNS/final/model.keras" ] || [ "$(cat "$RUNS/final/MEMBERS" 2>/dev/null)" != "$members_key" ]; then
  rm -rf "$RUNS/final" "$RUNS/export" "$RUNS/export_first_member"  # made from these members
  if [ "$PRESET_TOOL" = kfold ]; then  # on the out-of-fold predictions of fold2..fold9
    python -m catdog_tf.ensemble --oof "${dirs[@]}" --out="$RUNS/final"
  else
    python -m catdog_tf.ensemble "${dirs[@]}" --records="$RUNS/records" --split=$VAL_FOLD --out="$RUNS/final"
  fi
  echo "$members_key" > "$RUNS/final/MEMBERS"
fi

stage "5/7 evaluate the exported model: held-out $HELDOUT and native sizes; out-of-fold label review"
[ -f "$RUNS/final/heldout.json" ] || python -m catdog_tf.evaluate --model="$RUNS/final/model.keras" \
  --records="$RUNS/records" --split=$HELDOUT --json_out="$RUNS/final/heldout.json"
if [ ! -d "$NATIVE" ]; then
  echo "native-size evaluation skipped: no folder $NATIVE"
elif [ ! -f "$RUNS/final/native.json" ]; then
  python -m catdog_tf.evaluate --model="$RUNS/final/model.keras" --images="$NATIVE" --json_out="$RUNS/final/native.json"
fi
# Label-error review: the training photos whose out-of-fold prediction contradicts their label
# most confidently, on a contact sheet (oof_review_plots/worst_mistakes.png) for a person to look at.
[ "$PRESET_TOOL" != kfold ] || [ -f "$RUNS/final/oof_review.json" ] || python -m catdog_tf.evaluate --predictions="$RUNS/final/oof_predictions.csv" \
  --records="$RUNS/records" --worst=48 --json_out="$RUNS/final/oof_review.json"

stage "6/7 submission"
[ -f "$RUNS/final/submission.csv" ] || python -m catdog_tf.predict --model="$RUNS/final/model.keras" \
  --images="$DATA/test" --out="$RUNS/final/submission.csv"
stage "7/7 serving artifacts: SavedModel on JPEG bytes, LiteRT, plain-Keras model.keras -> $RUNS/export"
[ -f "$RUNS/export/export.json" ] || python -m catdog_tf.export --model="$RUNS/final/model.keras" --out="$RUNS/export"
# LiteRT has no kernel for the antialiased resize that feeds members of another input size, so a
# mixed-size ensemble has no model.tflite; the phone model is the student when there is one (better
# and 3x faster than a member alone: RESULTS.md experiment 40), else the first member alone.
first=${dirs[0]#--member=}
[ -n "$STUDENT" ] || [ -f "$RUNS/export_first_member/export.json" ] || python -m catdog_tf.export --model="$first" \
  --out="$RUNS/export_first_member"
if [ -n "$STUDENT" ]; then
  stage "8/8 student $STUDENT_PRESET_MEMBERS distilled from the ensemble (fold2..fold9 out-of-fold + test) -> $RUNS/student"
  m=$STUDENT_PRESET_MEMBERS; size=""
  [[ $m == *@* ]] && size="--image_size=${m#*@}"
  python -m catdog_tf.train --backbone="${m%@*}" $size --records="$RUNS/records" \
    --train_split=${KFOLDS//,/+}+test --val_split=none --soft_targets="$RUNS/final/oof_predictions.csv" \
    --soft_targets="$RUNS/final/submission.csv" --out="$RUNS/student" $STUDENT_PRESET_FLAGS ${STUDENT_FLAGS:-}
  # Its figures and exports belong to this model: a retrained student (new flags, a new teacher) redoes them.
  key=$(sha256sum "$RUNS/student/model.keras" | cut -c1-16)
  if [ "$(cat "$RUNS/student/EVALUATED" 2>/dev/null)" != "$key" ]; then
    rm -rf "$RUNS/student/heldout.json" "$RUNS/student/native.json" "$RUNS/export_student"
    echo "$key" > "$RUNS/student/EVALUATED"
  fi
  [ -f "$RUNS/student/heldout.json" ] || python -m catdog_tf.evaluate --model="$RUNS/student/model.keras" \
    --records="$RUNS/records" --split=$HELDOUT --json_out="$RUNS/student/heldout.json"
  [ ! -d "$NATIVE" ] || [ -f "$RUNS/student/native.json" ] || python -m catdog_tf.evaluate \
    --model="$RUNS/student/model.keras" --images="$NATIVE" --json_out="$RUNS/student/native.json"
  [ -f "$RUNS/export_student/export.json" ] || python -m catdog_tf.export --model="$RUNS/student/model.keras" \
    --out="$RUNS/export_student"
fi
echo "done in $(( ($(date +%s) - t0) / 60 )) min: $RUNS/final/{model.keras,heldout.json,native.json,submission.csv}, $RUNS/export/"
