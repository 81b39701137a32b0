#!/usr/bin/env bash
# Orthanc plugin benchmarks (docs/benchmarks.md, "Orthanc plugin (issue 3)").
#
#   bash bench/plugin/run_plugin_bench.sh BUILD_DIR [FIGURE...]
#
# FIGURE: scoring (bench_scoring: end to end vs bare forward), ingest (C-STORE without vs with the plugin),
# lag (stable study -> annotated), memory (VmHWM after 10,000 instances); default: all four, in this order.
# rest (REST latency of the read routes with 20 clients, idle and under a training run; issue 6) is run only
# when named; it stores the MHH films of /work/shared/data/mhh_covid_cxr (COMCL_BENCH_ARGS="--rest-data DIR").
# Needs Orthanc 1.10.1 and DCMTK's storescu (rest: also dcmdump) on PATH, and BUILD_DIR built with
#   cmake --build BUILD_DIR --target comcl_plugin comcl bench_scoring
# Scratch data go to $COMCL_BENCH_WORK (default /tmp/comcl-plugin-bench); synthetic archives are kept there
# and reused, Orthanc storage folders are removed after each run. Results: one JSON line per measurement
# on stdout and in $COMCL_BENCH_WORK/results.jsonl (scoring: scoring.jsonl). Extra options for the Python
# helper (e.g. --runs 5): COMCL_BENCH_ARGS; for bench_scoring: COMCL_SCORING_ARGS. Every Orthanc started
# is stopped on exit, also on Ctrl-C.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
figures=("$@")
[[ ${#figures[@]} -gt 0 ]] || figures=(scoring ingest lag memory)
here=$(cd "$(dirname "$0")" && pwd)
work=${COMCL_BENCH_WORK:-/tmp/comcl-plugin-bench}
mkdir -p "$work"
: >"$work/orthanc.pids"

helper_pid=""
cleanup() {
  local status=$?
  if [[ -n "$helper_pid" ]] && kill -0 "$helper_pid" 2>/dev/null; then
    kill -TERM "$helper_pid" 2>/dev/null || true
    wait "$helper_pid" 2>/dev/null || true
  fi
  # Orthancs the helper could not stop itself (killed hard): only our own pids, only if still Orthanc.
  while read -r pid; do
    [[ -n "$pid" ]] || continue
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == Orthanc ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$work/orthanc.pids"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v Orthanc >/dev/null || { echo "Orthanc is not on PATH" >&2; exit 1; }
command -v storescu >/dev/null || { echo "storescu (dcmtk) is not on PATH" >&2; exit 1; }

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\" load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""

orthanc_figures=()
for figure in "${figures[@]}"; do
  case "$figure" in
    ingest | lag | memory | rest) orthanc_figures+=("$figure") ;;
    scoring)
      [[ -x "$build/bench/bench_scoring" ]] || { echo "missing $build/bench/bench_scoring" >&2; exit 1; }
      rm -rf "$work/scoring"
      # shellcheck disable=SC2086
      "$build/bench/bench_scoring" --work "$work/scoring" ${COMCL_SCORING_ARGS:-} | tee "$work/scoring.jsonl"
      rm -rf "$work/scoring"
      ;;
    *) echo "unknown figure $figure (ingest, lag, scoring, memory, rest)" >&2; exit 2 ;;
  esac
done

if [[ ${#orthanc_figures[@]} -gt 0 ]]; then
  # shellcheck disable=SC2086
  python3 "$here/plugin_bench.py" --build "$build" --work "$work" --figures "${orthanc_figures[@]}" \
    ${COMCL_BENCH_ARGS:-} &
  helper_pid=$!
  wait "$helper_pid"
  helper_pid=""
fi
