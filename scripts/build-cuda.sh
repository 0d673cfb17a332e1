#!/usr/bin/env bash
# Builds regsh with the `cuda` feature on a machine without a CUDA toolkit: nvcc, the CUDA headers and
# the runtime libraries (cudart, cuBLAS, cuRAND, NVRTC) come from NVIDIA's wheels on PyPI (CUDA 13.5,
# pinned below). The driver library libcuda.so is in no wheel (it comes with the NVIDIA driver), so the
# link uses a stub made from cuda.h's declarations, as the toolkit's own lib64/stubs/libcuda.so is made:
# the binary records libcuda.so.1 and needs the NVIDIA driver to start. Not part of the tests (.ci/run):
# the kernels' nvcc build and a second release build take tens of minutes on 2 cores.
#
# Output: target/cuda/release/regsh. The toolkit is assembled under target/cuda-toolkit.
# Options (environment): CUDA_COMPUTE_CAP (90: H100 / H200), JOBS (cargo jobs, default all cores).
# Prints "build-cuda: built ..." or "build-cuda: cannot build: <what is missing>" and exits non-zero.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
CAP=${CUDA_COMPUTE_CAP:-90}
TK="$PWD/target/cuda-toolkit"
WHEELS=(
  nvidia-cuda-nvcc==13.5.37 nvidia-cuda-crt==13.5.37 nvidia-nvvm==13.5.37 nvidia-cuda-runtime==13.5.37
  nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-cccl==13.3.5.0.6 nvidia-curand==10.4.4.72 nvidia-cublas==13.10.0.20
)
fail() { echo "build-cuda: cannot build: $*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 (with pip) is needed to fetch the CUDA wheels"
command -v cc >/dev/null || fail "a C compiler (cc) is needed to make the libcuda.so link stub"
mkdir -p "$TK/wheels" "$TK/site" "$TK/stubs"
if [ ! -f "$TK/site/.complete" ]; then
  echo "build-cuda: fetching ${#WHEELS[@]} CUDA wheels from PyPI into $TK/wheels" >&2
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
    -d "$TK/wheels" "${WHEELS[@]}" || fail "the CUDA wheels could not be downloaded from PyPI (${WHEELS[*]})"
  for w in "$TK"/wheels/*.whl; do
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$TK/site"
  done
  touch "$TK/site/.complete"
fi
CUDA="$TK/site/nvidia/cu13"
[ -x "$CUDA/bin/nvcc" ] || chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/* 2>/dev/null || true
[ -x "$CUDA/bin/nvcc" ] || fail "no nvcc in the nvidia-cuda-nvcc wheel ($CUDA/bin/nvcc)"
[ -f "$CUDA/include/cuda.h" ] || fail "no cuda.h in the nvidia-cuda-runtime wheel"
"$CUDA/bin/nvcc" --version >/dev/null 2>&1 || fail "nvcc from the wheel does not run here: $("$CUDA/bin/nvcc" --version 2>&1 | tail -n 1)"

# The linker wants unversioned names; the wheels ship libX.so.N only.
for f in "$CUDA"/lib/lib*.so.*; do
  base=$(basename "$f")
  ln -sf "$base" "$CUDA/lib/${base%%.so.*}.so"
done
# libcuda.so: every driver entry point cuda.h declares, as empty functions, with the driver's soname.
if [ ! -f "$TK/stubs/libcuda.so" ]; then
  cc -E -P -I"$CUDA/include" -x c "$CUDA/include/cuda.h" 2>/dev/null |
    grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d ' (' | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$TK/stubs/libcuda.c"
  [ -s "$TK/stubs/libcuda.c" ] || fail "no driver entry points found in cuda.h"
  cc -shared -fPIC -o "$TK/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$TK/stubs/libcuda.c" ||
    fail "the libcuda.so stub did not compile"
fi

export CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_HOME="$CUDA" CUDA_TOOLKIT_ROOT_DIR="$CUDA"
export CUDA_COMPUTE_CAP="$CAP" PATH="$CUDA/bin:$PATH"
# cudarc (candle's CUDA bindings) reads the toolkit version from nvcc and knows CUDA up to 13.4; the
# 13.x driver API is stable within the major version, so its 13.4 bindings serve the 13.5 toolkit.
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13040}"
export LIBRARY_PATH="$CUDA/lib:$TK/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$CUDA/lib -L native=$TK/stubs"
# nvcc's host compiler must accept the CUDA headers: keep the system's.
echo "build-cuda: $("$CUDA/bin/nvcc" --version | tail -n 1), compute capability $CAP" >&2
jobs=()
[ -n "${JOBS:-}" ] && jobs=(-j "$JOBS")
if ! cargo build --locked --release --features cuda --target-dir target/cuda "${jobs[@]}" >&2; then
  fail "cargo build --features cuda failed (see the compiler output above)"
fi
bin=target/cuda/release/regsh
[ -x "$bin" ] || fail "no binary at $bin"
needs=$(readelf -d "$bin" 2>/dev/null | grep -oE 'lib(cuda|cublas|curand|nvrtc)[^]]*' | sort -u | tr '\n' ' ' || true)
echo "build-cuda: built $bin (CUDA 13.5, sm_$CAP; needs at run time: ${needs:-see ldd}; the NVIDIA driver)"
