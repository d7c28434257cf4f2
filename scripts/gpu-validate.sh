#!/usr/bin/env bash
# One-shot validation of ferrite's CUDA backend on a GPU machine that has
# the NVIDIA driver and CUDA but no Rust toolchain, from the executables
# that scripts/gpu-build.sh put in .gpu/. Runs in stages, each with its own
# timeout, under a global deadline; a stage whose tool is missing is
# skipped with the reason, and no stage stops the others. Writes into
# OUT_DIR one log per stage, JSON results, summary.json and summary.md
# (rewritten after every stage, so a killed run still leaves a summary).
#
# Usage: scripts/gpu-validate.sh OUT_DIR            # a real GPU (.gpu built with --features cuda)
#        scripts/gpu-validate.sh OUT_DIR --rehearse # the emulated GPU, tiny sizes
#                                                   # (.gpu built with --emulator)
#
# Environment: FERRITE_VALIDATE_SECONDS (global deadline, default 480),
# FERRITE_DEVICE_TEST_SCALE (default 8 on a GPU, 1 in a rehearsal),
# NVRTC_DIR (the directory of libnvrtc.so.13; default: found under the CUDA
# installation). See docs/CUDA.md for what each stage does.
set -uo pipefail

usage() { echo "usage: $0 OUT_DIR [--rehearse]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
OUT="$1"
REHEARSE=0
if [[ $# -ge 2 ]]; then
    [[ "$2" == "--rehearse" ]] || usage
    REHEARSE=1
fi
cd "$(dirname "$0")/.."
ROOT="$PWD"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BIN="$ROOT/.gpu/bin"
MANIFEST="$ROOT/.gpu/MANIFEST.json"
STAGES="$OUT/stages.jsonl"
: > "$STAGES"
START=$(date +%s)
DEADLINE=$((START + ${FERRITE_VALIDATE_SECONDS:-480}))
SKIP=3 # a stage exits with this status (after printing "SKIP: reason") to be skipped

if [[ ! -f "$MANIFEST" ]]; then
    echo "error: $MANIFEST is missing: run scripts/gpu-build.sh first" >&2
    exit 2
fi
FEATURES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["features"])' "$MANIFEST")
WANT=cuda
((REHEARSE)) && WANT=cuda-emulator
if [[ "$FEATURES" != "$WANT" ]]; then
    echo "error: .gpu/ holds a --features $FEATURES build; this run needs --features $WANT" \
        "(scripts/gpu-build.sh$( ((REHEARSE)) && echo ' --emulator'))" >&2
    exit 2
fi

# Every stage sees these.
export ROOT OUT BIN SKIP REHEARSE
export FERRITE_CUDA_CACHE="$OUT/cuda-cache" # compile once, reuse in every stage
if ((REHEARSE)); then
    export FERRITE_CUDA_EMULATE=1
    export FERRITE_DEVICE_TEST_SCALE="${FERRITE_DEVICE_TEST_SCALE:-1}"
    export TINY=--tiny
else
    export FERRITE_DEVICE_TEST_SCALE="${FERRITE_DEVICE_TEST_SCALE:-8}"
    export TINY=
fi
export FERRITE_REQUIRE_GPU=1
export FERRITE_TEST_MNIST_DIR="$ROOT/.gpu/data/mnist" # the device suite's trainer runs

# The machine's own NVRTC (a newer one from elsewhere may write code its
# driver cannot load): NVRTC_DIR, else the CUDA installation, else the loader's.
find_nvrtc() {
    local d
    for d in ${NVRTC_DIR:-} ${CUDA_HOME:-} ${CUDA_HOME:+$CUDA_HOME/lib64} \
        /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib /usr/local/cuda-*/lib64 \
        /usr/local/cuda-*/targets/*/lib; do
        if [[ -d "$d" ]] && compgen -G "$d/libnvrtc.so*" > /dev/null; then
            echo "$d"
            return
        fi
    done
    ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ {print $NF; exit}' | xargs -r dirname
}
NVRTC_LIB="$(find_nvrtc)"
if [[ -n "$NVRTC_LIB" ]]; then
    export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export NVRTC_LIB

# NCCL (the single-rank check, test device_nccl): cudarc loads libnccl.so,
# while Python's NCCL wheel ships libnccl.so.2 only; link it under the name
# cudarc looks for.
find_nccl() {
    ldconfig -p 2>/dev/null | awk '/libnccl\.so/ {print $NF; exit}'
    compgen -G "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so*" | head -n 1
    python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib", "libnccl.so.2"))' 2>/dev/null
}
NCCL_SO="$(find_nccl | grep -m1 . || true)"
if [[ -n "$NCCL_SO" && -e "$NCCL_SO" ]]; then
    mkdir -p "$OUT/nccl-lib"
    ln -sf "$NCCL_SO" "$OUT/nccl-lib/libnccl.so"
    export LD_LIBRARY_PATH="$OUT/nccl-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export NCCL_SO

# record NAME STATUS SECONDS NOTE: one line of stages.jsonl, then the summary.
record() {
    python3 - "$STAGES" "$@" <<'EOF'
import json, sys
path, name, status, nanos, note = sys.argv[1:6]
with open(path, "a") as f:
    f.write(json.dumps({"stage": name, "status": status, "seconds": round(int(nanos) / 1e9, 2),
                        "note": note}) + "\n")
EOF
    python3 "$ROOT/scripts/gpu-report.py" summary "$OUT" > /dev/null 2>&1 || true
}

# stage NAME TIMEOUT: runs function stage_NAME under min(TIMEOUT, time left).
stage() {
    local name=$1 limit=$2 left status note
    left=$((DEADLINE - $(date +%s)))
    if ((left < 10)); then
        record "$name" skipped 0 "global deadline reached before this stage"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s)"
    local t0 t1 rc
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" bash -c "stage_$name" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    case $rc in
        0) status=passed note="" ;;
        "$SKIP") status=skipped note="$(grep '^SKIP: ' "$OUT/$name.log" | tail -1 | cut -c7-)" ;;
        124 | 137) status=timeout note="stopped after ${limit}s" ;;
        *) status=failed note="exit status $rc: $(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-200)" ;;
    esac
    echo "   $status ${note:+($note)}"
    record "$name" "$status" "$((t1 - t0))" "$note"
}

skip() { echo "SKIP: $*"; exit "$SKIP"; }
have() { command -v "$1" > /dev/null 2>&1; }
export -f skip have

# --- the stages -----------------------------------------------------------

stage_env() {
    echo "rehearsal: $REHEARSE"
    echo "nvrtc: ${NVRTC_LIB:-not found}"
    echo "nccl: ${NCCL_SO:-not found}"
    uname -a
    ldd --version 2>&1 | head -1
    if have nvidia-smi; then
        nvidia-smi
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm \
            --format=csv > "$OUT/gpu.csv" || true
    else
        echo "nvidia-smi: not found"
    fi
    have nvcc && nvcc --version | tail -2
    python3 "$ROOT/scripts/gpu-report.py" env "$ROOT/.gpu/MANIFEST.json" > "$OUT/env.json"
    cat "$OUT/env.json"
    python3 - "$OUT/env.json" <<'EOF'
import json, sys
env = json.load(open(sys.argv[1]))
if not env["glibc_ok"]:
    sys.exit(f"glibc {env['glibc']} is older than the {env['glibc_required']} the executables need")
EOF
}

stage_kernels() {
    # The summary first (it compiles and fills the cache), then the JSON.
    "$BIN/ferrite" cuda-check || true
    "$BIN/ferrite" cuda-check --json > "$OUT/kernels.json"
}

stage_kernels_bundle() {
    ((REHEARSE)) && skip "no CUBIN bundle in an emulator build"
    [[ -d "$ROOT/.gpu/cubin" ]] || skip "no CUBIN bundle in .gpu/ (NVRTC was missing at build time)"
    FERRITE_CUDA_CUBIN_DIR="$ROOT/.gpu/cubin" FERRITE_CUDA_CACHE=off \
        "$BIN/ferrite" cuda-check --json > "$OUT/kernels_bundle.json" || return 1
    python3 - "$OUT/kernels_bundle.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
other = [m["family"] for m in report["modules"] if m["origin"] != "prebuilt bundle"]
if other:
    sys.exit(f"not loaded from the bundle: {other}")
print(f"every family loaded from the bundle on {report['device']}")
EOF
}

stage_tests() {
    local failed=0 t rc
    : > "$OUT/tests.txt"
    for t in cuda_kernels_compile cuda_device device_ops device_conv device_nn device_loss device_mixed device_train device_round_trips device_gradcheck device_sync_bn device_nccl; do
        [[ -x "$BIN/$t" ]] || { echo "$t missing" >> "$OUT/tests.txt"; failed=1; continue; }
        echo "--- $t (FERRITE_DEVICE_TEST_SCALE=$FERRITE_DEVICE_TEST_SCALE)"
        timeout 120 "$BIN/$t" 2>&1 | tee "$OUT/test_$t.log" | grep -E '^test |test result|panicked|device suite'
        rc=${PIPESTATUS[0]}
        echo "$t $rc" >> "$OUT/tests.txt"
        ((rc == 0)) || failed=1
    done
    python3 "$ROOT/scripts/gpu-report.py" tests "$OUT" > "$OUT/tests.json"
    return $failed
}

stage_sanitizer() {
    have compute-sanitizer || skip "compute-sanitizer not found"
    ((REHEARSE)) && skip "compute-sanitizer checks a real GPU only"
    local rc=0
    # Small sizes: the suite at scale 1, one test thread (the tools serialise anyway).
    FERRITE_DEVICE_TEST_SCALE=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
        --log-file "$OUT/memcheck.txt" "$BIN/cuda_device" --test-threads=1 || rc=1
    tail -3 "$OUT/memcheck.txt"
    # racecheck: the kernels with shared memory (reductions, softmax, GEMMs).
    FERRITE_DEVICE_TEST_SCALE=1 compute-sanitizer --tool racecheck --error-exitcode 9 \
        --log-file "$OUT/racecheck.txt" "$BIN/cuda_device" --test-threads=1 \
        row_reductions softmax sgemm half_precision || rc=1
    tail -3 "$OUT/racecheck.txt"
    return $rc
}

stage_train() {
    set -o pipefail
    "$BIN/ferrite" train --help | grep -q -- '--device' ||
        skip "this ferrite has no 'train --device'"
    # 2 epochs of PLM on MultiMNIST-LT with a ResNet-8, same seed on both
    # devices: 960 images in batches of 32 (60 steps) on a GPU, 32 in
    # batches of 16 (4 steps) on the emulated GPU.
    local args=(--dataset multimnist-lt --data-dir "$ROOT/.gpu/data/mnist" --model resnet8
        --loss plm --seed 0 --epochs 2)
    if ((REHEARSE)); then
        args+=(--train-size 32 --test-size 32 --batch-size 16)
        export FERRITE_EMULATOR_RACE_CHECK=0 # the kernels' race check has its own tests
    else
        args+=(--train-size 960 --test-size 256 --batch-size 32)
    fi
    rm -rf "$OUT/train_cpu" "$OUT/train_gpu"
    "$BIN/ferrite" train --device cpu --out "$OUT/train_cpu" "${args[@]}" | grep -v '^|' || return 1
    "$BIN/ferrite" train --device cuda --out "$OUT/train_gpu" "${args[@]}" | grep -v '^|' || return 1
    python3 "$ROOT/scripts/gpu-report.py" train "$OUT/train_cpu" "$OUT/train_gpu" \
        > "$OUT/train_compare.json"
    local rc=$?
    cat "$OUT/train_compare.json"
    return $rc
}

stage_bench() {
    "$BIN/ferrite" bench --device cuda $TINY --budget-ms 300 --json > "$OUT/bench_ferrite.json" ||
        return 1
    python3 "$ROOT/benches/compare_gpu.py" "$OUT/bench_ferrite.json" > "$OUT/bench_compare.md"
    cat "$OUT/bench_compare.md"
}

stage_torch() {
    local rc=0
    python3 "$ROOT/benches/pytorch_gpu_reference.py" $TINY --budget-ms 300 --json \
        > "$OUT/bench_torch.json" 2> "$OUT/bench_torch.err" || rc=$?
    cat "$OUT/bench_torch.err"
    ((rc == 3)) && skip "$(tail -1 "$OUT/bench_torch.err")"
    ((rc == 0)) || return $rc
    python3 "$ROOT/benches/compare_gpu.py" "$OUT/bench_ferrite.json" "$OUT/bench_torch.json" \
        --json "$OUT/bench_joined.json" > "$OUT/bench_compare.md"
    cat "$OUT/bench_compare.md"
}

stage_ncu() {
    have ncu || skip "ncu not found"
    ((REHEARSE)) && skip "ncu profiles a real GPU only"
    ncu --target-processes all --kernel-name regex:gemm_fwd --launch-count 8 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --csv --page details \
        "$BIN/ferrite" bench --device cuda --filter gemm_nn --sizes 4096 --budget-ms 0 \
        > "$OUT/ncu_gemm.csv"
    local rc=$?
    head -40 "$OUT/ncu_gemm.csv"
    grep -q 'ERR_NVGPUCTRPERM' "$OUT/ncu_gemm.csv" &&
        skip "ncu: no permission for the GPU performance counters (ERR_NVGPUCTRPERM)"
    return $rc
}

export -f stage_env stage_kernels stage_kernels_bundle stage_tests stage_sanitizer \
    stage_train stage_bench stage_torch stage_ncu

# --- the run --------------------------------------------------------------

stage env 20
stage kernels 60
stage kernels_bundle 30
stage tests 200
stage sanitizer 90
stage train 60
stage bench 90
stage torch 90
stage ncu 60

python3 "$ROOT/scripts/gpu-report.py" summary "$OUT"
grep -q '"status": "failed"\|"status": "timeout"' "$STAGES" && exit 1
exit 0
