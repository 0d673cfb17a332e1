#!/usr/bin/env bash
# The test command: fetches the real data (idempotent; nothing is downloaded when it is there) and runs
# the whole test suite. Works on a fresh machine with the Rust toolchain and python3 + pip.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test real_data`).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh
cargo test --locked "$@"
