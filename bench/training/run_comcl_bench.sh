#!/usr/bin/env bash
# CoMCL's training throughput against MoCo v2 on the same backbone, image size and batch (docs/benchmarks.md,
# issue 5), and the share of CoMCL's step time spent making its views (degradation, patch extraction and
# augmentation). Runs `comcl pretrain` for one epoch of each method, the two taking turns for --repeat rounds,
# on an index built from a real data set with a binary label (lesion images = positives).
#
# usage: bench/training/run_comcl_bench.sh [--out FILE] [--data covid_chestxray_subset] [--label COVID-19]
#                                          [--sizes "64:16 224:16"] [--repeat 2] [--device cpu] [--work DIR]
#                                          [--lesion-source none]
#   COMCL=path/to/comcl (default build-plugin/tools/comcl/comcl); --device cuda on a GPU machine
# Images/s: MoCo counts query images, CoMCL lesion samples (each with 3 query and 5 key views at
# healthyPerLesion 1, against MoCo's 1 + 1), so the table also gives encoder images/s (every view through
# either encoder, per second). Making views: the step's time inside augmentation (MoCo) or the view maker
# (CoMCL), measured on the CPU only. Lesion boxes: none (random windows) by default, so that no CAM model is
# trained before each run; the box source does not change the step's work.
set -euo pipefail
cd "$(dirname "$0")/../.."

comcl=${COMCL:-build-plugin/tools/comcl/comcl}
data=${COMCL_SHARED_DATA:-$(cd .. && pwd)/shared/data}
folder=covid_chestxray_subset label=COVID-19 sizes="64:16 224:16" repeat=2 device=cpu work=/tmp/comcl-comcl-bench out="" lesion_source=none
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --data) folder=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --lesion-source) lesion_source=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$work"
db=$work/index.sqlite
if [ ! -f "$work/index.done" ]; then
  rm -f "$db" "$db.images"
  "$comcl" import-manifest "$data/$folder" --db "$db" --size 256 >"$work/import.txt"
  touch "$work/index.done"
fi

# One epoch; prints "images/s views-share" (the after-first-step rate, the views share or -).
run_one() {
  local method=$1 size=$2 batch=$3 log run
  run=$(mktemp -d "$work/run-XXXXXX") && rmdir "$run"
  log=$work/$method-$size.txt
  local extra=()
  [ "$method" = comcl ] && extra=(--lesion-label "$label" --lesion-source "$lesion_source")
  "$comcl" pretrain --db "$db" --run "$run" --method "$method" "${extra[@]}" --epochs 1 --batch-size "$batch" \
    --image-size "$size" --device "$device" --quiet >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  rm -rf "$run"
  local rate share
  rate=$(sed -n 's/.*; \([0-9.][0-9.]*\) images\/s after the first step.*/\1/p' "$log" | tail -1)
  share=$(sed -n 's/.*making views \([0-9.][0-9.]*\) % of the step time.*/\1/p' "$log" | tail -1)
  echo "${rate:--} ${share:--}"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows=()
for pair in $sizes; do
  size=${pair%%:*} batch=${pair##*:}
  moco_rates=() moco_shares=() comcl_rates=() comcl_shares=()
  for round in $(seq "$repeat"); do
    echo "round $round/$repeat, $size px, batch $batch" >&2
    read -r r s <<<"$(run_one moco "$size" "$batch")"; moco_rates+=("$r"); moco_shares+=("$s")
    read -r r s <<<"$(run_one comcl "$size" "$batch")"; comcl_rates+=("$r"); comcl_shares+=("$s")
  done
  m=$(median "${moco_rates[@]}") c=$(median "${comcl_rates[@]}")
  rows+=("| $size | $batch | $m | $(median "${moco_shares[@]}") % | $c | $(awk -v c="$c" 'BEGIN { printf "%.1f", 8 * c }') |\
 $(awk -v m="$m" 'BEGIN { printf "%.1f", 2 * m }') | $(median "${comcl_shares[@]}") % |\
 $(awk -v m="$m" -v c="$c" 'BEGIN { printf "%.2f", c / m }') |")
done
table="| size | batch | MoCo v2 images/s | MoCo making views | CoMCL lesion samples/s | CoMCL encoder images/s | MoCo encoder images/s | CoMCL making views | CoMCL / MoCo samples |
|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")"
echo "$table"
[ -n "$out" ] && echo "$table" >"$out"
exit 0
