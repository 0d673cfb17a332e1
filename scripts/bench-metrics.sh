#!/usr/bin/env bash
# Similarity-measure benchmark at 197x233x189 (ICBM 2009a T1 against its inverse): forward and
# forward+backward seconds and extra peak memory, one process per measure, with each time's ratio to
# SSD's in the same run. THREADS (default: all cores), REPS (default 3).
#
# With BASE=<commit> (or OLD_BENCH=<a metrics bench binary>), the same benchmark of that older regsh runs
# beside this checkout's, old and new alternating per measure (which goes first flips every measure), and
# the table gains the old forward+backward time and the ratio old / new. BASE is checked out in
# target/bench-base-src and built in the same target directory.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh icbm152_2009a >/dev/null
THREADS=${THREADS:-$(nproc)}
bench_binary() { # the metrics bench executable of the checkout in $1 (target dir $2)
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --locked --bench metrics --no-run 2>&1) |
    grep -oE '\(([^)]*release/deps/metrics-[0-9a-f]+)\)' | tr -d '()' | tail -n 1
}
NEW=$(bench_binary . "${CARGO_TARGET_DIR:-$PWD/target}")
[ -x "$NEW" ] || { echo "bench-metrics: no bench binary built" >&2; exit 1; }
OLD=${OLD_BENCH:-}
if [ -z "$OLD" ] && [ -n "${BASE:-}" ]; then
  src=target/bench-base-src
  [ -d "$src" ] || git worktree add --detach "$src" "$BASE" >&2
  git -C "$src" checkout --quiet --detach "$BASE"
  OLD=$(bench_binary "$src" "${CARGO_TARGET_DIR:-$PWD/target}")
  [ -x "$OLD" ] || { echo "bench-metrics: could not build the bench at $BASE" >&2; exit 1; }
fi
export REGSH_DATA="$PWD/data"
rows=""
i=0
for m in ssd ncc lncc mi nmi cr cr_patch mi_patch; do
  order=(new)
  if [ -n "$OLD" ]; then
    order=(new old)
    ((i % 2)) && order=(old new)
  fi
  for tool in "${order[@]}"; do
    bin=$NEW
    [ "$tool" = old ] && bin=$OLD
    line=$(RAYON_NUM_THREADS=$THREADS "$bin" "$m" 2>/dev/null) || { echo "bench-metrics: $m ($tool) failed" >&2; exit 1; }
    rows+="$tool $line"$'\n'
  done
  i=$((i + 1))
done
python3 - "$rows" <<'PY'
import json, sys
rows = {}
for l in sys.argv[1].splitlines():
    if l.strip():
        tool, js = l.split(" ", 1)
        r = json.loads(js)
        rows.setdefault(r["metric"], {})[tool] = r
base = next(iter(rows.values()))["new"]
old = any("old" in v for v in rows.values())
head = f"{'measure':44} {'fwd s':>7} {'fwd+bwd s':>10} {'x SSD':>6} {'peak MiB':>9}"
print(head + (f" {'old fwd+bwd s':>14} {'old / new':>10}" if old else ""))
for name, v in rows.items():
    r = v["new"]
    line = f"{name:44} {r['forward_s']:7.3f} {r['forward_backward_s']:10.3f} {r['forward_backward_s'] / base['forward_backward_s']:6.1f} {r['extra_peak_mib']:9.1f}"
    if "old" in v:
        o = v["old"]["forward_backward_s"]
        line += f" {o:14.3f} {o / r['forward_backward_s']:10.2f}"
    print(line)
print(f"{base['voxels']} voxels, {base['threads']} threads; 'x SSD' = forward+backward time / SSD's")
PY
