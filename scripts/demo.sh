#!/usr/bin/env bash
# The README's demo command. Installs and builds comcl, writes the real PNG radiographs of ../shared/data as
# DICOM with `comcl to-dicom` (patient, study, date and view kept), starts Orthanc with the plugin on
# localhost (embedded SQLite, storage under out/demo), stores the studies with storescu, imports their labels
# through REST (JSON and CSV), trains a model through POST /comcl/train with a CPU-sized configuration,
# shows the new version with its held-out metrics, then stores new studies and prints their scores and quality
# flags. Orthanc keeps running afterwards (the URL is printed); `--stop` stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
stop=false
for argument in "$@"; do
  case $argument in
    --stop) stop=true ;;
    *) echo "usage: $0 [--stop]" >&2 && exit 2 ;;
  esac
done
started=$(date +%s)
bash scripts/build.sh comcl comcl_plugin
build=${COMCL_BUILD_DIR:-build}
comcl=$build/tools/comcl/comcl
data=${COMCL_SHARED_DATA:-../shared/data}
out=out/demo
if [[ -f $out/orthanc.pid ]]; then  # a demo Orthanc left running by an earlier run
  kill "$(cat "$out/orthanc.pid")" 2>/dev/null || true
fi
rm -rf "$out" && mkdir -p "$out"

step() { printf '\n=== %s\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

step "Write the PNG sets as DICOM (comcl to-dicom): COVID-19 collection, MHH COVID-19 films, NIH ChestX-ray14"
"$comcl" to-dicom "$data/covid_chestxray_subset" --out "$out/dicom/covid" \
  --labels-out "$out/covid-labels.json" --label COVID-19 | sed -n '1,3p;/labels:/p'
"$comcl" to-dicom "$data/mhh_covid_cxr" --out "$out/dicom/mhh" | sed -n '1,2p'
"$comcl" to-dicom "$data/nih_cxr14_subset" --out "$out/dicom/nih" | sed -n '1,2p'
# MHH's ICU admission as a CSV keyed by AccessionNumber (to-dicom writes the manifest's study_id there).
python3 - "$data/mhh_covid_cxr/manifest.csv" >"$out/mhh-icu.csv" <<'EOF'
import csv, sys
studies = {}
for row in csv.DictReader(open(sys.argv[1], newline="")):
    studies[row["study_id"]] = max(studies.get(row["study_id"], 0), int(row["label_icu_ever"]))
print("AccessionNumber,icu")
for study, icu in sorted(studies.items()):
    print(f"{study},{icu}")
EOF
printf 'labels: %s COVID-19 study rows (JSON), %s ICU study rows (CSV)\n' \
  "$(json 'print(len(d))' <"$out/covid-labels.json")" "$(($(wc -l <"$out/mhh-icu.csv") - 1))"

COMCL_DEMO_STARTED=$started bash scripts/demo_orthanc.sh "$out" "$stop"
