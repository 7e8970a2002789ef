#!/usr/bin/env bash
# The whole GPU session for iqpfr-256 in two device calls, ~12 minutes of device time in all
# (issue 17: 15 minutes per session, 10 per command, machine start included):
#
#   bash scripts/default_model/device_session.sh 1     # call 1: stages I and II   (~7 min)
#   bash scripts/default_model/device_session.sh 2     # call 2: stage III + the CUDA benchmark (~4 min)
#
# Each stage runs through device_run.sh (preflight, time-boxed training, fp16 export to $OUT);
# a stage's MINUTES count from its own start. Defaults: 2.8 / 2.0 / 1.5 minutes of training for
# stages I / II / III (DM_MINUTES="M1 M2 M3" overrides). Call 1 carries .device_data; call 2 carries
# .device_data and .device_ckpt (rebuilt by collect.py from call 1's reply) in case the machine went
# cold in between. Call 2 then times CodeFormer at 512 px on CUDA (fp32 reference, bf16, CUDA graphs,
# torch.compile) with benchmarks/inference.py into $OUT/inference_cuda.json (DM_BENCH_ARGS overrides
# its arguments; DM_BENCH=0 skips it; it is cut after DM_BENCH_S seconds, default 170).
set -u
PART=${1:?usage: device_session.sh 1|2}
cd "$(dirname "$0")/../.." || exit 2
read -r M1 M2 M3 <<< "${DM_MINUTES:-2.8 2.0 1.5}"
OUT=${OUT:-runs/dm256/out}
export OUT
mkdir -p "$OUT"
PY=${DM_PYTHON:-python3}
RC=0
# the device returns at most 8 files (16 MiB each, 64 MiB in all): logs, samples and reports other than
# the last stage's go back as one tar; weights the next call does not need stay on the machine
bundle() {  # bundle NAME FILE...: tar the FILEs that exist into $OUT/NAME and delete them
  local name=$1; shift
  local present=()
  for f in "$@"; do [ -e "$OUT/$f" ] && present+=("$f"); done
  [ ${#present[@]} -gt 0 ] && tar -cf "$OUT/$name" -C "$OUT" "${present[@]}" && (cd "$OUT" && rm -f "${present[@]}")
}
case "$PART" in
  1)
    bash scripts/default_model/device_run.sh 1 "$M1" || RC=$?
    # stage II needs stage I's weights: a failed stage I still exported its last checkpoint
    bash scripts/default_model/device_run.sh 2 "$M2" || RC=$?
    # stage III needs stage II's weights and codes (back here for a cold machine), not stage I's
    [ $RC -eq 0 ] && rm -f "$OUT"/stage1_ema-*.safetensors "$OUT"/stage1_disc.safetensors
    bundle logs_part1.tar stage1_log.jsonl stage1_samples.png stage1_report.json stage2_log.jsonl stage2_samples.png
    ;;
  2)
    bash scripts/default_model/device_run.sh 3 "$M3" || RC=$?
    if [ "${DM_BENCH:-1}" != "0" ]; then
      # shellcheck disable=SC2086
      ARGS=${DM_BENCH_ARGS:---models codeformer --devices cuda --faces 64 --repeats 2 --compile}
      timeout -k 5 "${DM_BENCH_S:-170}" env PYTHONPATH="$PWD/src" $PY benchmarks/inference.py $ARGS \
        --json "$OUT/inference_cuda.json" 2>&1 | tail -n 40 | tee "$OUT/inference_cuda.txt"
      [ -s "$OUT/inference_cuda.json" ] || { echo "device_session.sh: the benchmark wrote no JSON" >&2; RC=5; }
    fi
    bundle logs_part2.tar stage3_log.jsonl stage3_samples.png
    ;;
  *) echo "device_session.sh: PART must be 1 or 2" >&2; exit 2 ;;
esac
echo "device_session.sh: part $PART exit $RC; \$OUT:"
ls -l "$OUT"
exit $RC
