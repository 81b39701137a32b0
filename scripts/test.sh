#!/usr/bin/env bash
# The README's test command (and .ci/run's): installs the Debian packages, builds, runs every test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir "${COMCL_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" --timeout 900
