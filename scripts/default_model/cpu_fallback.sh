#!/usr/bin/env bash
# CPU fallback of issue 8: train iqpfr-128 (configs/cpu128) on the 1,090 FFHQ faces.
#
# Two ways to spend the CPU:
#   bash scripts/default_model/cpu_fallback.sh STOP_AT          # the configs' fixed step counts,
#       resumed across sessions; STOP_AT (UNIX time) stops cleanly with a checkpoint + EMA export
#   bash scripts/default_model/cpu_fallback.sh --minutes M1 M2 M3
#       one session: each stage gets Mi minutes; its step count, cosine period and phase boundaries
#       are fitted to the speed measured in its first 40 steps (device_train.py's planner), so every
#       stage ends annealed. This is how the shipped iqpfr-128 was trained (see MODEL_CARD.md).
#   # in the background:
#   setsid nohup bash scripts/default_model/cpu_fallback.sh --minutes 60 27 40 \
#       >> runs/cpu128/fallback.log 2>&1 < /dev/null &
#
# A stage counts as done when runs/cpu128/stageN/DONE.json says "complete": true; a stage cut by the
# deadline resumes from its newest checkpoint on the next call. Scores: the percentile-rank CSV of
# pack_data.py (.device_data/train_scores.csv), so every quality bucket is trained (see README.md).
# THREADS (default 2) torch threads: 2 on a quiet 2-core machine (7 img/s in stage I); 1 when the
# machine is shared (two threads under load were ~10x slower). Finish with:
#   python3 scripts/default_model/finalize.py --weights runs/cpu128/stage3/model_ema.safetensors \
#       --config configs/cpu128/stage3.yaml --set data.scores_csv=.device_data/train_scores.csv --patch-zoo
set -u
cd "$(dirname "$0")/../.." || exit 2
if [ "${1:-}" = "--minutes" ]; then
  [ $# -eq 4 ] || { echo "usage: cpu_fallback.sh --minutes M1 M2 M3 | STOP_AT_UNIX_TIME" >&2; exit 2; }
  MINUTES=("$2" "$3" "$4")
else
  STOP=${1:?usage: cpu_fallback.sh --minutes M1 M2 M3 | STOP_AT_UNIX_TIME}
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
SCORES=${SCORES:-.device_data/train_scores.csv}
[ -f "$SCORES" ] || { echo "cpu_fallback.sh: $SCORES missing: run scripts/default_model/pack_data.py first" >&2; exit 2; }
mkdir -p runs/cpu128
done_stage() {
  python3 -c "import json,sys,pathlib; p=pathlib.Path('runs/cpu128/stage$1/DONE.json'); \
sys.exit(0 if p.is_file() and json.loads(p.read_text()).get('complete') else 1)"
}
COMMON=(--config-dir configs/cpu128 --root runs/cpu128 --out runs/cpu128/out
        --set "data.scores_csv=$SCORES" --set data.num_workers=1)
for s in 1 2 3; do
  if done_stage $s || { [ -n "${MINUTES+x}" ] && [ -f "runs/cpu128/stage$((s + 1))/DONE.json" ]; }; then
    echo "cpu_fallback.sh: stage $s done"; continue
  fi
  if [ -n "${MINUTES+x}" ]; then
    echo "cpu_fallback.sh: $(date -u +%H:%M) stage $s for ${MINUTES[$((s - 1))]} minutes (schedule fitted to the speed)"
    python3 scripts/default_model/device_train.py "$s" --minutes "${MINUTES[$((s - 1))]}" "${COMMON[@]}" || exit $?
  else
    echo "cpu_fallback.sh: $(date -u +%H:%M) stage $s until $(date -u -d @"$STOP" +%H:%M) UTC"
    python3 scripts/default_model/device_train.py "$s" --fixed --deadline "$STOP" "${COMMON[@]}" || exit $?
  fi
  if ! done_stage $s; then
    # a time-boxed stage cut a few steps early has annealed anyway: the next stage starts from its EMA
    [ -n "${MINUTES+x}" ] && { echo "cpu_fallback.sh: stage $s cut at its time limit; going on"; continue; }
    echo "cpu_fallback.sh: stage $s stopped at the deadline; run again to resume it"; exit 0
  fi
done
echo "cpu_fallback.sh: all three stages complete: runs/cpu128/stage3/model_ema.safetensors"
