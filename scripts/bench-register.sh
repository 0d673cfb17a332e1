#!/usr/bin/env bash
# Linear registration speed and accuracy, this checkout against an older regsh (by default the last
# commit before the fused sampled path), in the same run on the same thread count: N known random
# affines of ICBM 2009a T1 at 2 mm registered with `regsh register --transform affine` by NCC
# (`mono-ncc`) and by MI (`mono-mi`), and of avg152 T2 onto avg152 T1 by MI (`multi-mi`). Old and new
# alternate (which goes first flips every trial) so load on a shared machine hits both alike.
#
# Prints a Markdown table: median wall seconds of the whole `regsh register` process (load, register,
# warp, write), the ratio old / new, the new report's `register_seconds` (the registration call
# alone), and the mean and largest displacement error over the brain (mm) against the true affine.
# Writes it to target/bench-register.md. Data and scoring: scripts/bench_register.rhai.
#
# Options (environment): THREADS (2), N (5 affines per case), REPS (1 run of each affine per tool),
# SEED (20240601), CASES (mono-ncc,mono-mi,multi-mi), OLD_REGSH (a regsh binary to compare against;
# default: BASE built in target/bench-base), BASE (54d860f).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
THREADS=${THREADS:-2}
N=${N:-5}
REPS=${REPS:-1}
SEED=${SEED:-20240601}
CASES=${CASES:-mono-ncc,mono-mi,multi-mi}
BASE=${BASE:-54d860f}
TARGET=${CARGO_TARGET_DIR:-target}

scripts/fetch-data.sh >&2
cargo build --locked --release >&2
NEW="$TARGET/release/regsh"
if [ -z "${OLD_REGSH:-}" ]; then
  src=target/bench-base-src
  if [ ! -d "$src" ]; then
    git worktree add --detach "$src" "$BASE" >&2
  fi
  git -C "$src" checkout --quiet --detach "$BASE"
  (cd "$src" && CARGO_TARGET_DIR="$PWD/../bench-base" cargo build --locked --release >&2)
  OLD_REGSH=target/bench-base/release/regsh
fi
command -v python3 >/dev/null || { echo "bench-register: python3 is required" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$NEW" run scripts/bench_register.rhai prep "$WORK" "$N" "$SEED" >&2

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
now() { date +%s.%N; }
IFS=',' read -ra cases <<<"$CASES"
for case in "${cases[@]}"; do
  data=${case%%-*}
  metric=${case#*-}
  for ((i = 0; i < N; i++)); do
    for ((r = 0; r < REPS; r++)); do
      order=(old new)
      (((i + r) % 2)) && order=(new old)
      for tool in "${order[@]}"; do
        bin=$NEW
        [ "$tool" = old ] && bin=$OLD_REGSH
        prefix="$WORK/${case}_${tool}_$i"
        t0=$(now)
        "$bin" --threads "$THREADS" register --fixed "$WORK/${data}_fixed.nii.gz" \
          --moving "$WORK/${data}_moving$i.nii.gz" --transform affine --metric "$metric" --out "$prefix" >/dev/null
        t1=$(now)
        err=$("$NEW" run scripts/bench_register.rhai score "$WORK" "$data" "$i" "${prefix}_affine.tfm")
        reg=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("register_seconds", "nan"))' \
          "${prefix}_report.json")
        echo -e "$case\t$tool\t$i\t$(python3 -c "print($t1 - $t0)")\t$reg\t$err" >>"$RESULTS"
        echo "bench-register: $case $tool affine $i: $(tail -n 1 "$RESULTS" | cut -f4,5,6)" >&2
      done
    done
  done
done

mkdir -p target
python3 - "$RESULTS" "$THREADS" "$N" "$REPS" <<'PY' | tee target/bench-register.md
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
threads, n, reps = sys.argv[2:5]
print(f"{threads} threads, {n} affines per case, {reps} run(s) of each; seconds are medians, errors over the brain")
print()
print("| case | tool | wall s | old / new | register s | error mean mm | error max mm |")
print("|---|---|---|---|---|---|---|")
cases = list(dict.fromkeys(r[0] for r in rows))
for c in cases:
    med = {}
    for tool in ("old", "new"):
        rs = [r for r in rows if r[0] == c and r[1] == tool]
        med[tool] = st.median(float(r[3]) for r in rs)
    for tool in ("old", "new"):
        rs = [r for r in rows if r[0] == c and r[1] == tool]
        regs = [float(r[4]) for r in rs if r[4] != "nan"]
        errs = [float(r[5]) for r in rs]
        ratio = f"{med['old'] / med['new']:.2f}" if tool == "new" else "1.00"
        reg = f"{st.median(regs):.3f}" if regs else "-"
        print(f"| {c} | {tool} | {med[tool]:.3f} | {ratio} | {reg} | {sum(errs) / len(errs):.4f} | {max(errs):.4f} |")
PY
