#!/usr/bin/env bash
# The test command: fetches the real data and makes the Python reference environment (both idempotent:
# nothing is downloaded when they are there), then runs the whole test suite. Works on a fresh machine
# with the Rust toolchain and python3 + pip.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test real_data`).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
scripts/fetch-data.sh
scripts/setup-python.sh
cargo test --locked "$@"
