#!/usr/bin/env bash
# Decode + normalise + cache throughput on one core: comcl (C++/DCMTK) vs pydicom + numpy + Pillow, in one run
# on the same files, best of N passes. usage: bench/run_decode_bench.sh [BUILD_DIR] [PASSES]
# Results and their discussion: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
passes=${2:-5}
data=${COMCL_SHARED_DATA:-../shared/data}
core=${COMCL_BENCH_CORE:-0}
# The allocator settings the comcl tool makes for itself (imaging/batch_allocator.h), for the Python column.
tunables=glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456

# Only files both pipelines decode: the JPEG 2000 copy of RG1 is left out (DCMTK has no J2K codec).
mapfile -t small < <(find "$data/mhh_covid_cxr/dicom" -name '*.dcm' | sort)
rg1="$data/dicom_samples/RG1_CR_chest_PA_uncompressed.dcm"

best() { sed -n 's/^best images\/s: //p'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }

run_set() {
  local name=$1; shift
  local cpp cpp_default py py_tuned
  cpp=$(taskset -c "$core" "$build/bench/bench_decode" --passes "$passes" "$@" | best)
  cpp_default=$(taskset -c "$core" "$build/bench/bench_decode" --default-allocator --passes "$passes" "$@" | best)
  py=$(taskset -c "$core" /usr/bin/python3 bench/decode_pipeline.py --passes "$passes" "$@" | best)
  py_tuned=$(GLIBC_TUNABLES=$tunables taskset -c "$core" /usr/bin/python3 bench/decode_pipeline.py \
               --passes "$passes" "$@" | best)
  printf '| %s | %d | %s | %s | %s | %s | %s | %s |\n' "$name" "$#" "$cpp" "$cpp_default" "$py" "$py_tuned" \
    "$(ratio "$cpp" "$py")" "$(ratio "$cpp" "$py_tuned")"
}

echo "| files | images | comcl (as the tool runs) | comcl, glibc defaults | Python | Python, same allocator settings | speed-up | speed-up, same settings |"
echo "|---|---|---|---|---|---|---|---|"
run_set "MHH COVID CXR, 8-bit ~256x300" "${small[@]}"
run_set "RG1 CR, 15-bit MONOCHROME1 1841x1955 (x5)" "$rg1" "$rg1" "$rg1" "$rg1" "$rg1"
run_set "all decodable DICOMs in shared/data" "${small[@]}" "$rg1"
