#!/usr/bin/env bash
# The checks to run, in one go, on a lent GPU (issue 3, item 4: "the engine runs unchanged on
# CUDA ... if a GPU is at hand, record the same benchmark there once").
#
#   DATA=.data/mnist DIR=/tmp/gpu PACK=$OUT/gpu_session.tar.gz benchmarks/gpu_session.sh
#   QUICK=1 DEVICE=cpu DATA=../shared/data/mnist benchmarks/gpu_session.sh   # a dry run, here
#
# Runs from a checkout without installing it (PYTHONPATH=src; needs torch, numpy, tqdm and
# safetensors, which a PyTorch GPU image has). The device tool's machine has no MNIST: copy the
# four IDX files into an ignored folder of the checkout first (`mkdir -p .data && cp -r
# ../shared/data/mnist .data/ && echo /.data/ >> .git/info/exclude`) and carry `.data`. That
# tool returns at most 8 files from its $OUT, so PACK puts everything in one archive there,
# refreshed after every step; and it kills a command at its time limit, so no step starts once
# BUDGET seconds (default 480) have passed: what finished comes back either way.
#
# In order of what matters most, each step under its own time limit so that one hang does not
# take the others' time:
#   1. tests/test_device_agnostic.py, whose tests also run on the GPU where there is one (every
#      recipe's step, for real), and benchmarks/gpu_check.py: the engines' updates against
#      autograd's on the device;
#   2. `fflab train demo` on real MNIST on the device (1.73% on 2 CPU cores, RESULTS.md);
#   3. `fflab bench` rows for BENCHMARKS.md's GPU row: 3 x 1000 and 4 x 2000, fp32 and bf16,
#      the fused engine with the neutral pass on every 4th step, eager; then 3 x 1000 fp32 at
#      batch 1000, and at batch 100 with the official optimizer and compile=true.
# Everything goes to $DIR (one log per step, the benchmark JSON, the demo's run folder without
# its weights). Not yet run on a GPU: no session has been lent one. Dry run on 2 CPU cores: about 80 s.
# Exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-results/gpu}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-${FFLAB_DATA_DIR:-}}
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$DIR"
if [ -n "${QUICK:-}" ]; then   # a dry run: tiny nets and steps, the same commands
    NETS="16x3 16x4"; BENCH="--steps 2 --reps 1"; DEMO="--quick"; LIMIT=120
else
    NETS="1000x3 2000x4"; BENCH=""; DEMO=""; LIMIT=300
fi
BUDGET=${BUDGET:-480}
failed=0

pack() {
    [ -z "${PACK:-}" ] || tar czf "$PACK" -C "$(dirname "$DIR")" "$(basename "$DIR")"
}

step() {   # step NAME LIMIT_S COMMAND...: run it, log to $DIR/NAME.log, note a failure
    local name=$1 limit=$2; shift 2
    if [ "$SECONDS" -ge "$BUDGET" ]; then
        echo "== $name: skipped, $SECONDS s of the $BUDGET s budget spent" | tee "$DIR/$name.log"
        failed=$((failed + 1))
        return
    fi
    echo "== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$DIR/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    pack
}

step env 60 "$PY" -m fflab env
step device_tests "$LIMIT" "$PY" -m pytest -q -p no:cacheprovider tests/test_device_agnostic.py
step gpu_check "$LIMIT" "$PY" benchmarks/gpu_check.py --device "$DEVICE"
step demo "$LIMIT" "$PY" -m fflab train demo $DEMO device="$DEVICE" --no-progress --out "$DIR/demo" \
    ${DATA:+--data-dir "$DATA"}
rm -f "$DIR"/demo/*.safetensors "$DIR"/demo/*.pt   # the numbers come back, not the weights
pack
for net in $NETS; do
    for dtype in float32 bfloat16; do
        step "bench_${net}_${dtype}" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" --hidden "$net" \
            --engine fused --neutral-every 4 --dtype "$dtype" $BENCH --json "$DIR/bench_${net}_${dtype}.json"
    done
done
# batch 100 (the issue's rows) leaves a GPU waiting on kernel launches; one row at batch 1000
step "bench_${NETS%% *}_float32_b1000" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" --hidden "${NETS%% *}" \
    --engine fused --neutral-every 4 --batch-size 1000 $BENCH --json "$DIR/bench_${NETS%% *}_float32_b1000.json"
step "bench_${NETS%% *}_float32_sgd_compile" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" \
    --hidden "${NETS%% *}" --engine fused --neutral-every 4 --optimizer sgd --compile $BENCH \
    --json "$DIR/bench_${NETS%% *}_float32_sgd_compile.json"
pack
echo "$failed step(s) failed or skipped${PACK:+; all in $PACK}"
exit $((failed > 0))
