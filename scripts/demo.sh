#!/usr/bin/env bash
# The main job on real data: fetch the data, build the release binary, and run the recipe
# examples/main_job.rhai: avg152 T2 (moving) registered onto ICBM 2009a T1 at 2 mm (rigid, affine, then a
# greedy dense field, Parzen mutual information), printing the grey / white matter Dice before and after
# and writing target/main_job_{warped.nii.gz,transform.nii.gz,snapshot.png}.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh
cargo build --release --locked
target/release/regsh run examples/main_job.rhai "${1:-target/main_job}"
