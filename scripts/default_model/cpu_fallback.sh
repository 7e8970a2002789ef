#!/usr/bin/env bash
# CPU fallback of issue 8: train iqpfr-128 (configs/cpu128) on the 1,090 FFHQ faces, across sessions.
#
#   bash scripts/default_model/cpu_fallback.sh STOP_AT           # STOP_AT: UNIX time to stop cleanly
#   # in the background, stopping 10 minutes before a 09:25 UTC session end:
#   setsid nohup nice -n 19 bash scripts/default_model/cpu_fallback.sh "$(date -d 'today 09:15' +%s)" \
#       >> runs/cpu128/fallback.log 2>&1 < /dev/null &
#
# Each stage resumes from its newest checkpoint (runs/cpu128/stageN/checkpoints) and stops with a
# checkpoint + EMA export at STOP_AT, so a session ending loses nothing; the next session runs the
# same command. A stage counts as done when runs/cpu128/stageN/DONE.json says "complete": true.
# Scores: the percentile-rank CSV of pack_data.py (.device_data/train_scores.csv), so every quality
# bucket is trained (see README.md). One torch thread: on the shared 2-core machine two threads were
# ~10x slower. Finish with:
#   python3 scripts/default_model/finalize.py --weights runs/cpu128/stage3/model_ema.safetensors \
#       --config configs/cpu128/stage3.yaml --set data.scores_csv=.device_data/train_scores.csv -o FILE
set -u
STOP=${1:?usage: cpu_fallback.sh STOP_AT_UNIX_TIME}
cd "$(dirname "$0")/../.." || exit 2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
SCORES=${SCORES:-.device_data/train_scores.csv}
[ -f "$SCORES" ] || { echo "cpu_fallback.sh: $SCORES missing: run scripts/default_model/pack_data.py first" >&2; exit 2; }
mkdir -p runs/cpu128
done_stage() {
  python3 -c "import json,sys,pathlib; p=pathlib.Path('runs/cpu128/stage$1/DONE.json'); \
sys.exit(0 if p.is_file() and json.loads(p.read_text()).get('complete') else 1)"
}
for s in 1 2 3; do
  if done_stage $s; then echo "cpu_fallback.sh: stage $s complete"; continue; fi
  echo "cpu_fallback.sh: $(date -u +%H:%M) stage $s until $(date -u -d @"$STOP" +%H:%M) UTC"
  python3 scripts/default_model/device_train.py "$s" --fixed --config-dir configs/cpu128 --root runs/cpu128 \
    --deadline "$STOP" --out runs/cpu128/out --set "data.scores_csv=$SCORES" --set data.num_workers=1 || exit $?
  done_stage $s || { echo "cpu_fallback.sh: stage $s stopped at the deadline; run again next session"; exit 0; }
done
echo "cpu_fallback.sh: all three stages complete: runs/cpu128/stage3/model_ema.safetensors"
