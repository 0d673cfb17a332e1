#!/usr/bin/env bash
# The main job on real data. For now (the foundation issue): fetch the data, build the release binary and
# describe each fetched image's grid in physical space with `regsh info`. Later issues replace this with a
# registration of avg152 T2 to ICBM 2009a T1.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh
cargo build --release --locked
D=${REGSH_DATA:-data}
target/release/regsh info \
  "$D/avg152/avg152T1.nii" \
  "$D/icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" \
  "$D/colin27/aal.nii.gz" \
  "$D/ct_brain/ct_brain_atlas_1mm.nii.gz"
