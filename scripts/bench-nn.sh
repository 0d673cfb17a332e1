#!/usr/bin/env bash
# Network benchmark on the CPU (benches/nn.rs, release): conv3d fast vs slow twin at 1x16x64^3
# (forward, forward + backward), and a training step and an inference of the U-Net (seed 001, as
# tests/learn_unet.rs trains it) and of the affine network (seed 000, as tests/train.rs), printed as a
# Markdown table. THREADS (default: all cores), REPS (default 5); PART=conv|unet|affine runs one part.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh colin27 avg152 >/dev/null
THREADS=${THREADS:-$(nproc)}
cargo bench --locked --bench nn --no-run >&2
RAYON_NUM_THREADS=$THREADS cargo bench --locked --bench nn -- ${PART:-} 2>/dev/null
