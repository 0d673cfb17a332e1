#!/usr/bin/env bash
# regsh against its peers: ANTsPy (antspyx) and SimpleITK registrations of the same cases in the same
# run, on the same number of threads (affine mono-modal on ICBM 2009a T1 at 2 mm, affine T2 -> T1 on
# avg152, deformable on Colin27 T1 at 2 mm; see scripts/bench_peers.py for the cases and measures).
# Prints a Markdown table (seconds, ratio to ANTs, displacement error mm, Dice) and writes it to
# target/bench-peers.md. Slow (minutes): not part of scripts/test.sh.
#
# Options (environment): THREADS (2), N (3 random affines per affine case), SEED, CASES
# (affine-mono,affine-multi,deformable), BENCH_ENV (the venv, default target/bench-peers-env).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
THREADS=${THREADS:-2}
N=${N:-3}
SEED=${SEED:-20240601}
CASES=${CASES:-affine-mono,affine-multi,deformable}
ENV=${BENCH_ENV:-target/bench-peers-env}
# Exact pins: antspyx 0.6.3 needs numpy < 2.4 and scipy < 1.16 (wheels for CPython 3.9-3.13).
PKGS=(antspyx==0.6.3 SimpleITK==2.5.7 numpy==2.3.5 scipy==1.15.3)

scripts/fetch-data.sh >&2
command -v python3 >/dev/null || { echo "bench-peers: python3 is required" >&2; exit 1; }
if ! { [ -x "$ENV/bin/python" ] && "$ENV/bin/python" - "${PKGS[@]}" <<'PY' 2>/dev/null; }
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
then
  echo "bench-peers: creating $ENV with ${PKGS[*]}" >&2
  python3 -m venv "$ENV"
  "$ENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${PKGS[@]}" >&2
fi
cargo build --locked --release >&2
export RAYON_NUM_THREADS=$THREADS ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
exec "$ENV/bin/python" scripts/bench_peers.py --regsh target/release/regsh --threads "$THREADS" --n "$N" \
  --seed "$SEED" --cases "$CASES" --out target/bench-peers.md
