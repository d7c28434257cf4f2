#!/usr/bin/env bash
# Builds everything scripts/gpu-validate.sh runs on a GPU machine that has
# no Rust toolchain, and puts it in .gpu/ (git-ignored):
#
#   .gpu/bin/ferrite          the CLI (cuda-check, bench, train)
#   .gpu/bin/<test>           the device test executables, stripped
#   .gpu/cubin/               a prebuilt CUBIN bundle for sm_90 (when NVRTC
#                             is available here; see docs/CUDA.md)
#   .gpu/data/mnist/          the MNIST files of the training comparison
#   .gpu/MANIFEST.json        commit, features, files, sizes, newest glibc
#                             symbol the executables need
#
# Usage: scripts/gpu-build.sh            # --features cuda, for a real GPU
#        scripts/gpu-build.sh --emulator # --features cuda-emulator, for the
#                                        # rehearsal (gpu-validate.sh --rehearse)
#
# Environment: CUBIN_ARCH (default sm_90); NVRTC_DIR, a directory holding
# libnvrtc.so.13 for the CUBIN bundle (default: whatever the loader finds).
set -euo pipefail

cd "$(dirname "$0")/.."
FEATURES=cuda
if [[ "${1:-}" == "--emulator" ]]; then
    FEATURES=cuda-emulator
elif [[ -n "${1:-}" ]]; then
    echo "usage: $0 [--emulator]" >&2
    exit 2
fi
ARCH="${CUBIN_ARCH:-sm_90}"
OUT=.gpu
# The device-parametrised suite, the raw-kernel tests and the compile check.
TESTS=(cuda_device cuda_kernels_compile device_ops device_conv device_nn device_loss device_mixed device_train device_round_trips device_gradcheck device_sync_bn device_nccl)
LIMIT_MIB=64

rm -rf "$OUT"
mkdir -p "$OUT/bin"

executables() { # cargo's JSON messages on stdin -> "name path" per executable
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        t = m["target"]
        print(t["name"], m["executable"])
'
}

echo "== building with --features $FEATURES"
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
{
    cargo build --release --features "$FEATURES" --bin ferrite --message-format=json
    cargo test --release --features "$FEATURES" "${test_args[@]}" --no-run --message-format=json
} | executables > "$OUT/executables.txt"

while read -r name path; do
    cp "$path" "$OUT/bin/$name"
    strip --strip-all "$OUT/bin/$name"
done < "$OUT/executables.txt"
rm "$OUT/executables.txt"

echo "== data for the training comparison"
mkdir -p "$OUT/data"
cp -r data/mnist "$OUT/data/mnist"

echo "== CUBIN bundle for $ARCH"
bundle_note="not built"
if [[ "$FEATURES" == cuda ]]; then
    if LD_LIBRARY_PATH="${NVRTC_DIR:+$NVRTC_DIR:}${LD_LIBRARY_PATH:-}" \
        "$OUT/bin/ferrite" cuda-compile --arch "$ARCH" --out "$OUT/cubin" > "$OUT/cubin.log" 2>&1; then
        bundle_note="$(tail -1 "$OUT/cubin.log")"
    else
        bundle_note="skipped: $(tail -1 "$OUT/cubin.log") (set NVRTC_DIR to a directory with libnvrtc.so.13)"
        rm -rf "$OUT/cubin"
    fi
    rm -f "$OUT/cubin.log"
else
    bundle_note="not built: the emulated GPU runs the kernels compiled as C++"
fi
echo "$bundle_note"

echo "== manifest"
glibc=$(for f in "$OUT"/bin/*; do objdump -T "$f" 2>/dev/null; done |
    grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -1)
total=$(du -sb "$OUT" | cut -f1)
python3 - "$OUT" "$FEATURES" "$ARCH" "$glibc" "$total" "$bundle_note" <<'EOF'
import json, os, subprocess, sys
out, features, arch, glibc, total, bundle = sys.argv[1:]
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout.strip())
files = {}
for root, _, names in os.walk(out):
    for n in names:
        p = os.path.join(root, n)
        files[os.path.relpath(p, out)] = os.path.getsize(p)
manifest = {"commit": commit, "dirty": dirty, "features": features, "cubin_arch": arch,
            "cubin_bundle": bundle, "glibc_required": glibc, "total_bytes": int(total),
            "files": dict(sorted(files.items()))}
json.dump(manifest, open(os.path.join(out, "MANIFEST.json"), "w"), indent=2)
EOF
mib=$(( (total + (1 << 20) - 1) >> 20 ))
echo "$OUT: ${mib} MiB in $(find "$OUT" -type f | wc -l) files; executables need ${glibc:-no versioned glibc}"
if (( mib > LIMIT_MIB )); then
    echo "error: $OUT is over ${LIMIT_MIB} MiB" >&2
    exit 1
fi
