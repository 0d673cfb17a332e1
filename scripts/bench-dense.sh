#!/usr/bin/env bash
# The dense stage's cost per voxel and iteration, part by part (benches/dense.rs: a level of 111 x 129
# x 107 voxels, the size of ICBM 2009a at 2 mm), beside the memory-traffic floor of each part (its
# bytes per voxel at the machine's measured copy bandwidth). Prints a Markdown table and writes it to
# target/bench-dense.md. THREADS (default 2), REPS (5).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
THREADS=${THREADS:-2}
REPS=${REPS:-5}
cargo bench --locked --no-run --bench dense >&2
out=$(RAYON_NUM_THREADS=$THREADS REPS=$REPS cargo bench --locked --bench dense 2>/dev/null)
python3 - "$out" <<'PY' | tee target/bench-dense.md
import json, math, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.startswith("{")]
bw = next(r["gb_per_second"] for r in rows if "gb_per_second" in r)
threads = rows[0]["threads"]
print(f"Dense iteration parts, {threads} threads, memory bandwidth (parallel copy) {bw:.1f} GB/s\n")
print("| part | ns per voxel | bytes per voxel | memory floor ns | flops per voxel |")
print("|---|---|---|---|---|")
for r in rows:
    if "ns_per_voxel" not in r:
        continue
    b, f = r["bytes_per_voxel"], r["flops_per_voxel"]
    known = isinstance(b, (int, float)) and not math.isnan(b)
    floor = f"{b / bw:.1f}" if known else "-"
    bs = f"{b:.0f}" if known else "-"
    fs = f"{f:.0f}" if isinstance(f, (int, float)) and not math.isnan(f) else "-"
    print(f"| {r['part']} | {r['ns_per_voxel']:.1f} | {bs} | {floor} | {fs} |")
PY
