#!/usr/bin/env bash
# The GPU checks and benchmarks, in one go: the engines run unchanged on CUDA, and the same
# benchmark rows as BENCHMARKS.md's CPU rows, recorded on the GPU.
#
#   DATA=.data/mnist PACK=/path/to/gpu-run.tar.gz benchmarks/gpu_run.sh
#   QUICK=1 DEVICE=cpu DATA=/path/to/mnist benchmarks/gpu_run.sh      # a dry run on the CPU
#
# Runs from a checkout without installing it (PYTHONPATH=src; needs torch, numpy, tqdm and
# safetensors, which a PyTorch GPU image has). A GPU machine without network access has no
# MNIST: copy the four IDX files into an ignored folder of the checkout first (e.g. `.data/mnist`,
# with `/.data/` in .git/info/exclude) and point DATA at it. Where only a few files can be
# brought back from the machine, PACK puts everything in one archive, refreshed after every step;
# where a command is killed at a time limit, no step starts once BUDGET seconds (default 480)
# have passed, so what finished comes back either way.
#
# In order of what matters most, each step under its own time limit so that one hang does not
# take the others' time:
#   1. tests/test_device_agnostic.py, whose tests also run on the GPU where there is one (every
#      recipe's step, for real), and benchmarks/gpu_check.py: the engines' updates against
#      autograd's on the device;
#   2. `fflab train demo` on real MNIST on the device (RESULTS.md has its CPU numbers);
#   3. `fflab bench` rows for BENCHMARKS.md's GPU row: 3 x 1000 and 4 x 2000, fp32 and bf16,
#      the shared engine with the neutral pass on every 4th step, eager; then 3 x 1000 fp32 at
#      batch 1000, and at batch 100 with the official optimizer and compile=true.
#
# Outputs, in $DIR (default results/bench; with QUICK, a folder under $TMPDIR), named as the
# other benchmark results are, MACHINE-COMMIT-WHAT.{txt,json}: MACHINE is the GPU (e.g. h200) or,
# on the CPU, its microarchitecture (e.g. zen3), or $MACHINE if set; COMMIT is the checkout's
# short commit (with -dirty when tracked files differ from it), or $COMMIT if set. One .txt per
# step (its output), the benchmark JSON, and the demo's run folder without its weights.
# Not yet run on a GPU (docs/gpu-readiness.md). Exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-${FFLAB_DATA_DIR:-}}
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [ -n "${QUICK:-}" ]; then   # a dry run: tiny nets and steps, the same commands
    NETS="16x3 16x4"; BENCH="--steps 2 --reps 1"; DEMO="--quick"; LIMIT=120
    DIR=${DIR:-${TMPDIR:-/tmp}/fflab-gpu-run-quick}
else
    NETS="1000x3 2000x4"; BENCH=""; DEMO=""; LIMIT=300
    DIR=${DIR:-results/bench}
fi
BUDGET=${BUDGET:-480}
mkdir -p "$DIR"

machine_tag() {   # the GPU's name, or the CPU's microarchitecture, as a short lower-case tag
    "$PY" - "$DEVICE" <<'EOF'
import platform, re, sys
import torch
dev = sys.argv[1]
if dev.startswith("cuda") and torch.cuda.is_available():
    name = torch.cuda.get_device_name(torch.device(dev) if ":" in dev else 0)
    name = re.sub(r"^(nvidia|amd)\s+", "", name.lower()).replace("geforce ", "")
else:
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    family, flags = int(info.get("cpu family", "0") or 0), info.get("flags", "").split()
    if info.get("vendor_id") == "AuthenticAMD" and family in (23, 25, 26):
        name = {23: "zen2", 25: "zen4" if "avx512f" in flags else "zen3", 26: "zen5"}[family]
    else:
        name = info.get("model name") or platform.machine()
print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "unknown")
EOF
}

commit_tag() {
    local c
    c=$(git rev-parse --short=7 HEAD 2>/dev/null) || { echo unknown; return; }
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || c="$c-dirty"
    echo "$c"
}

MACHINE=${MACHINE:-$(machine_tag)}
COMMIT=${COMMIT:-$(commit_tag)}
P="$DIR/$MACHINE-$COMMIT"   # every output's path starts so
echo "== outputs: $P-*"
failed=0

pack() {
    [ -z "${PACK:-}" ] || tar czf "$PACK" -C "$DIR" $(cd "$DIR" && ls -d "$MACHINE-$COMMIT"-* 2>/dev/null)
}

step() {   # step NAME LIMIT_S COMMAND...: run it, its output to $P-NAME.txt, note a failure
    local name=$1 limit=$2; shift 2
    if [ "$SECONDS" -ge "$BUDGET" ]; then
        echo "== $name: skipped, $SECONDS s of the $BUDGET s budget spent" | tee "$P-$name.txt"
        failed=$((failed + 1))
        return
    fi
    echo "== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$P-$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$P-$name.txt"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    pack
}

step env 60 "$PY" -m fflab env
step device-tests "$LIMIT" "$PY" -m pytest -q -p no:cacheprovider tests/test_device_agnostic.py
step gpu-check "$LIMIT" "$PY" benchmarks/gpu_check.py --device "$DEVICE"
step demo "$LIMIT" "$PY" -m fflab train demo $DEMO device="$DEVICE" --no-progress --out "$P-demo" \
    ${DATA:+--data-dir "$DATA"}
rm -f "$P"-demo/*.safetensors "$P"-demo/*.pt   # the numbers come back, not the weights
pack
for net in $NETS; do
    for dtype in float32 bfloat16; do
        step "bench-$net-$dtype" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" --hidden "$net" \
            --engine shared --neutral-every 4 --dtype "$dtype" $BENCH --json "$P-bench-$net-$dtype.json"
    done
done
# batch 100 (BENCHMARKS.md's rows) leaves a GPU waiting on kernel launches; one row at batch 1000
net=${NETS%% *}
step "bench-$net-float32-b1000" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" --hidden "$net" \
    --engine shared --neutral-every 4 --batch-size 1000 $BENCH --json "$P-bench-$net-float32-b1000.json"
step "bench-$net-float32-sgd-compile" "$LIMIT" "$PY" -m fflab bench --device "$DEVICE" \
    --hidden "$net" --engine shared --neutral-every 4 --optimizer sgd --compile $BENCH \
    --json "$P-bench-$net-float32-sgd-compile.json"
pack
echo "$failed step(s) failed or skipped; outputs: $P-*${PACK:+; all in $PACK}"
exit $((failed > 0))
