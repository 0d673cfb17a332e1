#!/usr/bin/env bash
# Similarity-measure benchmark at 197x233x189 (ICBM 2009a T1 against its inverse): forward and
# forward+backward seconds and extra peak memory, one process per measure, with each time's ratio to
# SSD's in the same run. THREADS (default: all cores), REPS (default 3).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh icbm152_2009a >/dev/null
THREADS=${THREADS:-$(nproc)}
cargo bench --locked --bench metrics --no-run >&2
rows=""
for m in ssd ncc lncc mi nmi cr cr_patch mi_patch; do
  rows+=$(RAYON_NUM_THREADS=$THREADS cargo bench --locked --bench metrics -- "$m" 2>/dev/null || { echo "bench-metrics: $m failed" >&2; exit 1; })$'\n'
done
python3 - "$rows" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
base = rows[0]
print(f"{'measure':44} {'fwd s':>7} {'fwd+bwd s':>10} {'x SSD':>6} {'peak MiB':>9}")
for r in rows:
    print(f"{r['metric']:44} {r['forward_s']:7.3f} {r['forward_backward_s']:10.3f} {r['forward_backward_s'] / base['forward_backward_s']:6.1f} {r['extra_peak_mib']:9.1f}")
print(f"{base['voxels']} voxels, {base['threads']} threads; 'x SSD' = forward+backward time / SSD's")
PY
