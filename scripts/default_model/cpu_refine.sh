#!/usr/bin/env bash
# Refine a CPU-trained iqpfr-128 (issue 8, CPU fallback): stages II and III again, on top of an earlier
# run's weights, with quality-augmented targets (blurred / sharpened copies of the faces, scored by
# score_variants.py) so that the quality condition steers the output, and half of stage III's image
# steps fed the large degradation so that the fusion keeps identity on the inputs it meets at test time.
#
#   python3 scripts/default_model/score_variants.py                  # .device_data/target_variants.csv
#   setsid nohup bash scripts/default_model/cpu_refine.sh runs/cpu128 runs/cpu128r 28 40 \
#       >> runs/cpu128r.log 2>&1 < /dev/null &
#
# FROM's stage-I VQGAN is kept (linked as ROOT/stage1: same codebooks, same discriminator); stage II
# starts from FROM's stage-II EMA. M2, M3: minutes for stages II and III (the planner of
# device_train.py fits steps and phases to the measured speed). Keep the machine idle meanwhile.
# Arguments after M3 go to both stages' device_train.py (e.g. --set stage2.quality_rows_reset=true).
# Finish with finalize.py --weights ROOT/stage3/model_ema.safetensors (see README.md).
set -u
cd "$(dirname "$0")/../.." || exit 2
[ $# -ge 4 ] || { echo "usage: cpu_refine.sh FROM ROOT M2 M3 [device_train.py options]" >&2; exit 2; }
FROM=$1 ROOT=$2 M2=$3 M3=$4
shift 4
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
SCORES=${SCORES:-.device_data/train_scores.csv}
VARIANTS=${VARIANTS:-.device_data/target_variants.csv}
for f in "$SCORES" "$VARIANTS" "$FROM/stage1/model_ema.safetensors" "$FROM/stage2/model_ema.safetensors"; do
  [ -f "$f" ] || { echo "cpu_refine.sh: $f missing" >&2; exit 2; }
done
mkdir -p "$ROOT"
[ -e "$ROOT/stage1" ] || ln -s "$(realpath "$FROM/stage1")" "$ROOT/stage1"
COMMON=(--config-dir configs/cpu128 --root "$ROOT" --out "$ROOT/out"
        --set "data.scores_csv=$SCORES" --set data.num_workers=1
        --set "data.target_variants=$VARIANTS" --set data.target_variant_prob=${VARIANT_PROB:-0.5} "$@")
if [ ! -f "$ROOT/stage2/DONE.json" ]; then
  echo "cpu_refine.sh: $(date -u +%H:%M) stage 2 for $M2 minutes from $FROM/stage2"
  python3 scripts/default_model/device_train.py 2 --minutes "$M2" "${COMMON[@]}" \
    --set "model.init=$FROM/stage2/model_ema.safetensors" --set stage2.quality_min_condition=0.7 || exit $?
fi
if [ ! -f "$ROOT/stage3/DONE.json" ]; then
  echo "cpu_refine.sh: $(date -u +%H:%M) stage 3 for $M3 minutes"
  python3 scripts/default_model/device_train.py 3 --minutes "$M3" "${COMMON[@]}" \
    --set stage3.image_large_share=${LARGE_SHARE:-0.5} || exit $?
fi
echo "cpu_refine.sh: $(date -u +%H:%M) done: $ROOT/stage3/model_ema.safetensors"
