#!/usr/bin/env bash
# Measures written in the DSL against the built-in tensor (not fused) path, at 2 mm (avg152 T1 / T2,
# 91x109x91): a script NCC against functional::ncc and a script LNCC (box window 9) against
# functional::lncc_slow, forward + backward, alternating in one process (benches/dsl.rs). Prints the
# seconds, the ratio script / built-in, and both values. THREADS (default: all cores), REPS (default 5).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh avg152 >/dev/null
THREADS=${THREADS:-$(nproc)}
bin=$(cargo bench --locked --bench dsl --no-run 2>&1 | grep -oE '\(([^)]*release/deps/dsl-[0-9a-f]+)\)' | tr -d '()' | tail -n 1)
[ -x "$bin" ] || { echo "bench-dsl: no bench binary built" >&2; exit 1; }
out=$(REGSH_DATA="$PWD/data" RAYON_NUM_THREADS=$THREADS "$bin")
python3 - "$out" <<'PY'
import json, sys
print(f"{'measure':8} {'script s':>9} {'built-in s':>11} {'script / built-in':>18} {'script value':>13} {'built-in value':>15}")
for line in sys.argv[1].splitlines():
    r = json.loads(line)
    print(f"{r['measure']:8} {r['script_s']:9.3f} {r['builtin_s']:11.3f} {r['ratio']:18.2f} {r['script_value']:13.6f} {r['builtin_value']:15.6f}")
print(f"({r['voxels']} voxels, {r['threads']} threads, forward + backward, median of alternating runs)")
PY
