#!/usr/bin/env bash
# GPU figures of the training engine (docs/benchmarks.md, "Training on a GPU"), run on a CUDA machine:
#   1. builds the training engine against the machine's PyTorch LibTorch (scripts/build-training-gpu.sh),
#   2. runs the CUDA tests (CPU-vs-CUDA agreement) and, if asked, the whole training test suite,
#   3. times pre-training steps: `comcl pretrain` (method per --methods) at each precision, against the same
#      MoCo v2 step in PyTorch (bench/training/moco_step.py) reading the same image cache in DataLoader workers,
#      and the PyTorch step on a batch already on the GPU (no data path: the compute-only ceiling).
# Writes everything under --out (logs, results.md) and keeps going after a failing part, so one call on a
# leased machine brings back as much as it can. --deadline SECONDS skips what would start after that.
#
# usage: bench/training/run_gpu_bench.sh --db INDEX [--out DIR] [--debs .gpu-debs] [--build build-gpu]
#          [--no-build] [--all-tests] [--size 224] [--batch 256] [--epochs 15] [--workers 8]
#          [--precisions "fp32 bf16 fp16"] [--methods "moco"] [--comcl-args "..."] [--deadline 540]
#          [--gtest source|debian|auto] [--py-steps 8] [--no-tests] [--py-data "cache synthetic"]
#   --gtest  how the build gets GoogleTest (scripts/build-training-gpu.sh; default: from source, built with the
#            machine's compiler)
#   --py-steps  timed steps of the PyTorch step with its DataLoader (its data path is the slow part there)
#   --py-data   which PyTorch sides to run: cache (DataLoader over the image cache), synthetic (no data path);
#            "" for none
#   --db     a comcl index whose image cache (INDEX.images) holds the images (built elsewhere with
#            `comcl import-manifest`: the training-only build has no image import)
#   --methods  comcl pretrain methods to time (moco, medaug, comcl); PyTorch runs MoCo v2 only
set -uo pipefail
cd "$(dirname "$0")/../.."

args="$*"
db="" out=${OUT:-/tmp/gpu-bench} debs=.gpu-debs build=build-gpu do_build=1 all_tests=0 gtest=source py_steps=8 run_tests=1 py_data="cache synthetic"
size=224 batch=256 epochs=15 workers=8 precisions="fp32 bf16 fp16" methods="moco" comcl_args="" deadline=540
while [ $# -gt 0 ]; do
  case $1 in
    --db) db=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --debs) debs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --gtest) gtest=$2; shift 2 ;;
    --py-steps) py_steps=$2; shift 2 ;;
    --no-tests) run_tests=0; shift ;;
    --py-data) py_data=$2; shift 2 ;;
    --all-tests) all_tests=1; shift ;;
    --size) size=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --precisions) precisions=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --comcl-args) comcl_args=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$db" ] && [ -f "$db" ] && [ -f "$db.images" ] || { echo "--db INDEX with INDEX.images is required" >&2; exit 2; }
mkdir -p "$out"
results=$out/results.md
python=${PYTHON:-python3}
comcl=$build/tools/comcl/comcl
time_left() { [ "$SECONDS" -lt "$deadline" ]; }
note() { echo "$*" | tee -a "$results"; }

note "# GPU bench $(date -u +%FT%TZ): $args"
note ""
note "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
note "- CPU cores: $(nproc); PyTorch: $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"

if [ "$do_build" = 1 ]; then
  started=$SECONDS
  if scripts/build-training-gpu.sh --debs "$debs" --build "$build" --jobs "$(nproc)" --gtest "$gtest" >"$out/build.log" 2>&1; then
    note "- build: ok in $((SECONDS - started)) s"
  else
    note "- build: FAILED after $((SECONDS - started)) s (build.log)"
    grep -E 'error|Error' "$out/build.log" | head -40 | tee -a "$results"
    exit 1
  fi
fi
ld_path=$(sed -n 's/.*export LD_LIBRARY_PATH=\([^$]*\).*/\1/p' "$out/build.log" 2>/dev/null | tail -1)
[ -n "$ld_path" ] && export LD_LIBRARY_PATH=$ld_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

tests=$build/tests/training/training_tests
if [ "$run_tests" = 1 ] && [ -x "$tests" ]; then
  OMP_NUM_THREADS=4 "$tests" --gtest_filter='*Cuda*:*CUDA*' >"$out/cuda-tests.log" 2>&1
  note "- CUDA tests (--gtest_filter='*Cuda*:*CUDA*'): exit $?; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/cuda-tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$out/cuda-tests.log" | tee -a "$results"
  # A crash hides which test it was: run them one by one, with a backtrace of any that crashes.
  if ! grep -qE '^\[  (PASSED|FAILED) ' "$out/cuda-tests.log"; then
    for t in $("$tests" --gtest_list_tests --gtest_filter='*Cuda*:*CUDA*' | awk '/^[^ ]/ { s = $1 } /^  / { print s $1 }'); do
      OMP_NUM_THREADS=4 "$tests" --gtest_filter="$t" >"$out/one-test.log" 2>&1
      code=$?
      note "  - $t: exit $code"
      if [ "$code" -ge 128 ] && command -v cuda-gdb >/dev/null; then
        cuda-gdb -batch -ex run -ex bt --args "$tests" --gtest_filter="$t" 2>&1 | grep -E '^#|signal' | head -25 |
          tee -a "$results"
      fi
    done
  fi
  if [ "$all_tests" = 1 ] && time_left; then
    OMP_NUM_THREADS=4 timeout $((deadline - SECONDS)) "$tests" >"$out/all-tests.log" 2>&1
    note "- all training tests: exit $?; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/all-tests.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]' "$out/all-tests.log" | tee -a "$results"
  fi
fi

# What one DataLoader item (two views) costs in one process, to read the DataLoader's rate against.
"$python" -c 'import sys, time; sys.path.insert(0, "bench/training"); import moco_step as m
d = m.CacheImages(sys.argv[1], m.view_transform(int(sys.argv[2]), 0)); t = time.perf_counter()
for i in range(50): d[i]
print("- one PyTorch data item (2 views, PIL + torchvision, one process): %.1f ms" % ((time.perf_counter() - t) * 20))' \
  "$db" "$size" 2>&1 | tail -1 | tee -a "$results"
images=$("$python" -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute("SELECT count(*) FROM instances WHERE cache_slot IS NOT NULL").fetchone()[0])' "$db")
steps=$((images / batch * epochs))
note ""
note "$images images, ${size} px, batch $batch, $epochs epochs ($steps steps), $workers loader threads/workers"
note ""
note "| side | method | precision | images/s after warm-up | data wait | notes |"
note "|---|---|---|---|---|---|"

for precision in $precisions; do
  for method in $methods; do
    time_left || { note "| comcl | $method | $precision | - | - | skipped: deadline |"; continue; }
    run=$(mktemp -d /tmp/gpu-run-XXXXXX) && rmdir "$run"
    log=$out/comcl-$method-$precision.txt
    # shellcheck disable=SC2086  # comcl_args holds several flags
    timeout $((deadline - SECONDS + 30)) "$comcl" pretrain --db "$db" --run "$run" --method "$method" \
      --epochs "$epochs" --batch-size "$batch" --image-size "$size" --device cuda --precision "$precision" \
      --workers "$workers" --quiet $comcl_args >"$log" 2>&1
    code=$?
    ips=$(sed -n 's/.* \([0-9.][0-9.]*\) images\/s (data path waited.*/\1/p' "$log" | tail -1)
    wait=$(sed -n 's/.*(data path waited \([0-9.][0-9.]*\) % of the time.*/\1/p' "$log" | tail -1)
    steady=$(sed -n 's/.*; \([0-9.][0-9.]*\) images\/s after the first step.*/\1/p' "$log" | tail -1)
    note "| comcl | $method | $precision | ${steady:--} | ${wait:+$wait %} | exit $code; ${ips:--} with the first step |"
    [ "$code" = 0 ] || tail -5 "$log" | tee -a "$results"
    rm -rf "$run"
  done
  for data in $py_data; do
    time_left || { note "| PyTorch | moco | $precision | - | - | skipped: deadline |"; continue; }
    log=$out/python-$data-$precision
    extra=()
    [ "$data" = synthetic ] && extra=(--synthetic)
    n=$steps
    [ "$data" = cache ] && n=$py_steps
    timeout $((deadline - SECONDS + 30)) "$python" bench/training/moco_step.py --comcl-db "$db" --device cuda \
      --precision "$precision" --image-size "$size" --batch-size "$batch" --steps "$n" --warmup 2 \
      --workers "$workers" "${extra[@]}" >"$log.json" 2>"$log.txt"
    code=$?
    json=$(tail -1 "$log.json")
    ips=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["images_per_second"])' "$json" 2>/dev/null)
    wait=$("$python" -c 'import json, sys; print(round(100 * json.loads(sys.argv[1])["data_wait_share"], 1))' "$json" 2>/dev/null)
    note "| PyTorch ($data) | moco | $precision | ${ips:--} | ${wait:+$wait %} | exit $code |"
    [ "$code" = 0 ] || tail -5 "$log.txt" | tee -a "$results"
  done
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >>"$out/nvidia-smi.txt" 2>&1
echo "wrote $results"
