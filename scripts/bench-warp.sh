#!/usr/bin/env bash
# Warp benchmark: regsh's fused warp (forward, forward+backward; affine and DDF) at 160x192x224 against
# SimpleITK's resampler measured in the same run on the same thread count. Prints a table with the
# ratio regsh speed / SimpleITK speed (above 1: regsh is faster). THREADS (default: all cores), REPS.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-5}
scripts/setup-python.sh >/dev/null
PY=${REGSH_PYENV:-target/pyenv}/bin/python
cargo bench --locked --no-run --bench warp >&2
ours=$(RAYON_NUM_THREADS=$THREADS REPS=$REPS cargo bench --locked --bench warp 2>/dev/null)
theirs=$("$PY" tests/python/bench_sitk.py "$THREADS" "$REPS")
"$PY" - "$ours" "$theirs" <<'PY'
import json, sys
ours = {d["case"]: d for d in map(json.loads, sys.argv[1].splitlines())}
theirs = {d["case"]: d for d in map(json.loads, sys.argv[2].splitlines())}
print(f"{'case':30} {'regsh s':>9} {'Mvox/s':>8} {'SimpleITK s':>12} {'ratio':>7}")
for case, d in ours.items():
    ref = case.replace("_backward", "")
    t = theirs.get(ref) if case == ref else None
    ratio = f"{t['seconds'] / d['seconds']:7.2f}" if t else "      -"
    ts = f"{t['seconds']:12.4f}" if t else " " * 12
    print(f"{case:30} {d['seconds']:9.4f} {d['voxels_per_second'] / 1e6:8.1f} {ts} {ratio}")
print(f"threads: {d['threads']}; ratio = SimpleITK seconds / regsh seconds (forward only; SimpleITK has no backward)")
PY
