#!/usr/bin/env bash
# MoCo v2 pre-training throughput on the CPU: `comcl pretrain --method moco` (C++/LibTorch, batched tensor
# augmentations on the comcl image cache) against the same step written the PyTorch way
# (bench/training/moco_step.py: PIL + torchvision transforms in DataLoader workers, Debian's python3-torch),
# same images, image size, batch, queue, loader workers and compute threads. Images/s counts query images per
# second of wall time, data loading included, over one epoch of the C++ side (images / batch steps, the last
# partial batch dropped); the Python side runs the same number of steps, counted from its first step as the
# C++ side counts (--py-warmup 0). A third column runs the Python side again with glibc told to keep freed
# blocks in the heap (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_), which comcl does itself while training
# on the CPU, to show how much of the difference that is. The sides take turns for --repeat rounds and the
# table gives medians. Prints a Markdown table and writes it to --out.
#
# usage: bench/training/run_train_bench.sh [--out FILE] [--sizes "64:32 224:16"] [--workers N] [--threads N]
#                                          [--queue-size K] [--work DIR] [--py-warmup N] [--repeat N]
#                                          [--python-only]
#   COMCL=path/to/comcl  (default build-plugin/tools/comcl/comcl; needs `pretrain`)
#   PYTHON=python3 with torch + torchvision (default /usr/bin/python3: Debian's python3-torch 1.13)
#   --sizes  image size:batch pairs. The paper's (MedAug / MoCo-CXR) batch is 16 at 224 px; the defaults, batch
#            32 at 64 px and 16 at 224 px, with --repeat 3 (the default) take about 20 minutes on 2 idle cores,
#            most of it at 224 px.
#   --threads  compute threads of both sides (default: every core, nproc): OMP_NUM_THREADS for comcl,
#            torch.set_num_threads for Python. --workers: comcl's loader threads, DataLoader worker processes.
#   --work   the script's own folder for the benchmark index and logs (default /tmp/comcl-train-bench; an index
#            there without the script's bench.manifests list is rebuilt): built once, if missing, with
#            `comcl import-manifest` from mhh_covid_cxr and covid_chestxray_subset (a comcl without
#            import-manifest indexes the MHH DICOMs instead, and the Python side then reads MHH only).
#   --python-only  run only the Python column (steps from the manifests' image counts), e.g. to check it.
set -euo pipefail
cd "$(dirname "$0")/../.."

comcl=${COMCL:-build-plugin/tools/comcl/comcl}
python=${PYTHON:-/usr/bin/python3}
data=${COMCL_SHARED_DATA:-$(cd .. && pwd)/shared/data}
out=""
sizes="64:32 224:16"
workers=2
threads=$(nproc)
queue=256
work=/tmp/comcl-train-bench
py_warmup=0
python_only=0
repeat=3

while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --queue-size) queue=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --py-warmup) py_warmup=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --python-only) python_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$work"
db=$work/bench.sqlite
manifests_file=$work/bench.manifests  # which manifests the index was built from, one a line
log=$work/log
mkdir -p "$log"

count_rows() { # data rows of a manifest.csv (the report column holds no newlines in these sets)
  "$python" -c 'import csv, sys; print(sum(1 for r in csv.DictReader(open(sys.argv[1], newline="")) if r.get("file")))' "$1"
}

if [ "$python_only" = 0 ]; then
  if ! "$comcl" --help 2>&1 | grep -qE '^ +pretrain ' || ! "$comcl" pretrain --help >/dev/null 2>&1; then
    echo "$comcl has no working 'pretrain' subcommand (set COMCL=..., or pass --python-only)" >&2
    exit 1
  fi
  if [ ! -f "$db" ] || [ ! -f "$manifests_file" ]; then  # the list is written last: a half-built index is redone
    rm -f "$db" "$db.images" "$manifests_file" "$manifests_file.new"
    if "$comcl" --help 2>&1 | grep -qE '^ +import-manifest '; then
      for set in mhh_covid_cxr covid_chestxray_subset; do
        echo "building the index: comcl import-manifest $data/$set" >&2
        "$comcl" import-manifest "$data/$set" --db "$db" --size 256 >"$log/import-$set.txt" 2>&1 ||
          { cat "$log/import-$set.txt" >&2; exit 1; }
        echo "$data/$set/manifest.csv" >>"$manifests_file.new"
      done
      mv "$manifests_file.new" "$manifests_file"
    else
      echo "$comcl has no import-manifest: indexing the MHH DICOMs only (comcl index)" >&2
      "$comcl" index "$data/mhh_covid_cxr/dicom" --db "$db" --size 256 >"$log/index.txt" 2>&1 ||
        { cat "$log/index.txt" >&2; exit 1; }
      echo "$data/mhh_covid_cxr/manifest.csv" >"$manifests_file.new"
      mv "$manifests_file.new" "$manifests_file"
    fi
  fi
fi
if [ -f "$manifests_file" ]; then
  mapfile -t manifests <"$manifests_file"
else
  manifests=("$data/mhh_covid_cxr/manifest.csv" "$data/covid_chestxray_subset/manifest.csv")
fi
manifest_args=()
listed=0
for m in "${manifests[@]}"; do
  manifest_args+=(--manifest "$m")
  listed=$((listed + $(count_rows "$m")))
done

json_field() { "$python" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
percent() { awk -v s="$1" 'BEGIN { if (s == "") print "-"; else printf "%.1f %%", 100 * s }'; }

# Both sides use every core they are given: other work on the machine skews the numbers (OpenMP threads that
# wait for a busy core slow a step down several times), so say how busy it was.
load_start=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load_start" 'BEGIN { exit !(l > 0.5) }'; then
  echo "warning: load average $load_start before the run: other work on this machine will skew the numbers" >&2
fi

# glibc settings that keep freed blocks in the heap, as comcl does itself while it trains on the CPU
# (training/heap_retention.h): the "Python, same heap" column shows how much of the difference that is.
py_heap_env=(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647)

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR > 1) printf "%s-%s", lo, hi; else print lo }'; }

# One epoch of `comcl pretrain`; sets cpp_ips, cpp_wait (a fraction), images and py_queue.
run_cpp() {
  local size=$1 batch=$2 run out=$log/cpp-$1.txt
  run=$(mktemp -d "$work/run-$size-XXXXXX")
  rmdir "$run"  # comcl creates its run directory; an existing one would be resumed
  echo "C++:    comcl pretrain --method moco --image-size $size --batch-size $batch --queue-size $queue" \
       "--workers $workers (OMP_NUM_THREADS=$threads)" >&2
  OMP_NUM_THREADS=$threads "$comcl" pretrain --db "$db" --run "$run" --method moco --epochs 1 \
    --batch-size "$batch" --image-size "$size" --queue-size "$queue" --device cpu --workers "$workers" \
    --quiet >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
  rm -rf "$run"
  # "pre-training moco (...) on N images of P patients", "... batch B, 1 epochs, queue K, ...",
  # "finished in ... on cpu: X images/s (data path waited Y % of the time)"
  images=$(sed -n 's/^pre-training .* on \([0-9][0-9]*\) images of .*/\1/p' "$out" | head -1)
  py_queue=$(sed -n 's/.*, queue \([0-9][0-9]*\),.*/\1/p' "$out" | head -1)
  cpp_ips=$(sed -n 's/.* \([0-9.][0-9.]*\) images\/s (data path waited.*/\1/p' "$out" | tail -1)
  cpp_wait=$(sed -n 's/.*(data path waited \([0-9.][0-9.]*\) % of the time.*/\1/p' "$out" | tail -1)
  if [ -z "$images" ] || [ -z "$cpp_ips" ] || [ -z "$cpp_wait" ] || [ -z "$py_queue" ]; then
    echo "could not read comcl's output ($out):" >&2
    cat "$out" >&2
    exit 1
  fi
  cpp_wait=$(awk -v p="$cpp_wait" 'BEGIN { print p / 100 }')
}

# moco_step.py for `steps` steps, with extra environment assignments after the fixed arguments; sets
# py_ips, py_wait and torch_version.
run_python() {
  local size=$1 batch=$2 steps=$3 tag=$4 json
  shift 4
  echo "Python: moco_step.py --image-size $size --batch-size $batch --steps $steps --queue-size $py_queue" \
       "--workers $workers --threads $threads $*" >&2
  env "$@" "$python" bench/training/moco_step.py "${manifest_args[@]}" --image-size "$size" \
    --batch-size "$batch" --steps "$steps" --warmup "$py_warmup" --workers "$workers" --queue-size "$py_queue" \
    --threads "$threads" >"$log/python-$tag-$size.json" 2>"$log/python-$tag-$size.txt" ||
    { cat "$log/python-$tag-$size.txt" >&2; exit 1; }
  json=$(tail -1 "$log/python-$tag-$size.json")
  py_ips=$(json_field "$json" images_per_second)
  py_wait=$(json_field "$json" data_wait_share)
  torch_version=$(json_field "$json" torch)
}

# The sides take turns, `repeat` rounds of each, so a slow phase of the machine hits all of them; the table
# gives medians (and the range of the C++ / Python ratio over the rounds).
rows=()
for pair in $sizes; do
  size=${pair%%:*}
  batch=${pair##*:}
  cpp_runs=() cpp_waits=() py_runs=() py_waits=() heap_runs=() ratios=()
  for round in $(seq "$repeat"); do
    echo "round $round/$repeat, $size px" >&2
    cpp_ips="" cpp_wait="" py_queue=$queue images=$listed
    if [ "$python_only" = 0 ]; then
      run_cpp "$size" "$batch"
      cpp_runs+=("$cpp_ips")
      cpp_waits+=("$cpp_wait")
    fi
    steps=$((images / batch))
    if [ "$steps" -lt 1 ]; then
      echo "only $images images for batch $batch" >&2
      exit 1
    fi
    run_python "$size" "$batch" "$steps" default
    py_runs+=("$py_ips")
    py_waits+=("$py_wait")
    [ -n "$cpp_ips" ] && ratios+=("$(awk -v a="$cpp_ips" -v b="$py_ips" 'BEGIN { printf "%.2f", a / b }')")
    run_python "$size" "$batch" "$steps" heap "${py_heap_env[@]}"
    heap_runs+=("$py_ips")
  done
  cpp_median=$(median "${cpp_runs[@]}")
  py_median=$(median "${py_runs[@]}")
  heap_median=$(median "${heap_runs[@]}")
  rows+=("| $size | $batch | $steps | ${cpp_median:--} | $py_median | $heap_median |\
 $(ratio "$cpp_median" "$py_median") ($(range "${ratios[@]}")) | $(ratio "$cpp_median" "$heap_median") |\
 $(percent "$(median "${cpp_waits[@]}")") | $(percent "$(median "${py_waits[@]}")") |")
done

report() {
  echo "MoCo v2 pre-training step on the CPU ($(nproc) cores: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo |
    head -1)), $(date -u +%Y-%m-%d)."
  echo "Both sides: compute threads $threads, loader workers $workers, queue $queue (or comcl's cap), ResNet-18 +" \
    "MLP head, fp32; $([ "$python_only" = 1 ] && echo "Python side only" || echo "comcl: $comcl");" \
    "Python: torch $torch_version, Debian's torchvision; ${#manifests[@]} manifest(s), $listed images listed."
  echo "Load average before / after the run: $load_start / $(cut -d' ' -f1 /proc/loadavg) (0 on an idle machine)."
  echo
  echo "Medians of $repeat interleaved rounds; the ratio's range is over the rounds."
  echo
  echo "| image size | batch | steps | C++ images/s | Python images/s | Python, same heap images/s |" \
    "C++ / Python (range) | C++ / Python, same heap | data wait C++ | data wait Python |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
}

if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  report | tee "$out"
else
  report
fi
