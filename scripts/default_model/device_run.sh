#!/usr/bin/env bash
# One device call = one training stage of the default model iqpfr-256, inside the 10-minute limit.
#
#   bash scripts/default_model/device_run.sh STAGE [MINUTES]     # STAGE 1, 2 or 3
#
# Run from the repository root on the GPU device (the `run` tool), carrying .device_data (and
# .device_ckpt when the machine may be cold). MINUTES (default 7.5 / 6.5 / 5.5 for stages I / II /
# III) is the time from the start of this script to the end of training; the export adds ~30 s,
# a hard kill comes 75 s after it and is followed by an export of the last checkpoint, so a call
# ends by MINUTES*60 + ~135 s at worst (keep MINUTES <= 7.5 for the 600 s limit).
# Outputs go to $OUT (fp16 EMA shards, logs, sample grid, report); see README.md.
#
# Environment knobs (tests, other layouts): DM_CONFIG_DIR, DM_ROOT (runs folder), DM_CARRIED
# (.device_ckpt), DM_SET ("k=v k=v" extra config overrides), DM_PROBE / DM_WARM (steps of the speed
# probe / before it), DM_FINISH_S (seconds kept for the final save), DM_PYTHON (python3).
set -u
STARTED=$(date +%s)
STAGE=${1:?usage: device_run.sh STAGE [MINUTES]}
case "$STAGE" in
  1) DEFAULT_MIN=7.5 ;;
  2) DEFAULT_MIN=6.5 ;;
  3) DEFAULT_MIN=5.5 ;;
  *) echo "device_run.sh: STAGE must be 1, 2 or 3" >&2; exit 2 ;;
esac
MINUTES=${2:-$DEFAULT_MIN}
cd "$(dirname "$0")/../.." || exit 2
PY=${DM_PYTHON:-python3}
OUT=${OUT:-runs/dm256/out}
mkdir -p "$OUT"
# the package runs from the checkout: no build step, no network (torch, numpy, opencv, scipy, Pillow,
# safetensors, pyyaml and tqdm are in the device image; anything else would come as .whl/ wheels)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 3
fi

# preflight: fail in seconds, not minutes, if the device cannot run the package
$PY - <<'EOF' || { echo "device_run.sh: preflight failed" >&2; exit 4; }
import sys, time
import torch, numpy, cv2, scipy, safetensors, yaml, PIL
print(f"[preflight] python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"opencv {cv2.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""), flush=True)
from iqpfr.models.factory import create_model
from iqpfr.quality.registry import create_scorer
dev = "cuda" if torch.cuda.is_available() else "cpu"
m = create_model("iqpfr-tiny").to(dev).eval()
with torch.no_grad():
    y = m(torch.zeros(1, 3, 64, 64, device=dev), w=torch.zeros(1, device=dev)).image
create_scorer("face-iqa")
print(f"[preflight] ok: iqpfr imports, tiny forward {tuple(y.shape)} on {dev}, face-iqa scorer loads", flush=True)
EOF

ARGS=(--deadline "$(awk -v s="$STARTED" -v m="$MINUTES" 'BEGIN{printf "%d", s + m * 60}')" --out "$OUT")
[ -n "${DM_CONFIG_DIR:-}" ] && ARGS+=(--config-dir "$DM_CONFIG_DIR")
[ -n "${DM_ROOT:-}" ] && ARGS+=(--root "$DM_ROOT")
[ -n "${DM_CARRIED:-}" ] && ARGS+=(--carried "$DM_CARRIED")
[ -n "${DM_PROBE:-}" ] && ARGS+=(--probe "$DM_PROBE")
[ -n "${DM_WARM:-}" ] && ARGS+=(--warm "$DM_WARM")
[ -n "${DM_FINISH_S:-}" ] && ARGS+=(--finish-s "$DM_FINISH_S")
for kv in ${DM_SET:-}; do ARGS+=(--set "$kv"); done
LIMIT=$(awk -v s="$STARTED" -v m="$MINUTES" -v now="$(date +%s)" 'BEGIN{printf "%d", s + m * 60 + 75 - now}')
timeout -k 10 "$LIMIT" $PY scripts/default_model/device_train.py "$STAGE" "${ARGS[@]}"
RC=$?
if [ $RC -ne 0 ]; then
  echo "device_run.sh: training exited with $RC; exporting the last checkpoint" >&2
  EXPORT=(--export-only --out "$OUT")
  [ -n "${DM_ROOT:-}" ] && EXPORT+=(--root "$DM_ROOT")
  [ -n "${DM_CONFIG_DIR:-}" ] && EXPORT+=(--config-dir "$DM_CONFIG_DIR")
  timeout -k 5 60 $PY scripts/default_model/device_train.py "$STAGE" "${EXPORT[@]}" || true
fi
echo "device_run.sh: stage $STAGE exit $RC after $(( $(date +%s) - STARTED )) s; \$OUT:"
ls -l "$OUT"
exit $RC
