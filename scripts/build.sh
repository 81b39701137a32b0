#!/usr/bin/env bash
# Installs the Debian packages and builds (Release) into ${COMCL_BUILD_DIR:-build}: everything, or the targets
# named as arguments (the demo builds only the comcl tool and the plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${COMCL_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
targets=()
for target in "$@"; do targets+=(--target "$target"); done
cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}"
