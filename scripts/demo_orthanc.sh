#!/usr/bin/env bash
# The Orthanc part of the demo (scripts/demo.sh writes the DICOM files and labels first): Orthanc with comcl on
# localhost, the studies stored with storescu, labels imported, a training run through REST followed to its
# end, the new model version, then new studies and their scores. Usage: demo_orthanc.sh OUT_DIR true|false
# (true: stop Orthanc at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: demo_orthanc.sh OUT_DIR true|false}
stop=${2:-false}
build=${COMCL_BUILD_DIR:-build}
data=${COMCL_SHARED_DATA:-../shared/data}
demo=$(realpath "$out")/orthanc
mkdir -p "$demo"
step() { printf '\n=== %s\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
dicom_port=$(free_port)
api="http://127.0.0.1:$http_port"
plugins="\"$PWD/$build/plugin/libOrthancComcl.so\""
gdcm=/usr/share/orthanc/plugins/libOrthancGdcm.so
[[ -f $gdcm ]] && plugins="$plugins, \"$gdcm\""  # JPEG 2000 and other codecs DCMTK lacks

# The training user: Comcl.PrivilegedUsers names who may label, train and activate; others only read.
cat >"$demo/orthanc.json" <<EOF
{
  "Name" : "comcl demo",
  "HttpPort" : $http_port, "DicomPort" : $dicom_port, "DicomAet" : "COMCLDEMO",
  "RemoteAccessAllowed" : false, "AuthenticationEnabled" : true,
  "RegisteredUsers" : { "trainer" : "demo-trainer", "viewer" : "demo-viewer" },
  "StorageDirectory" : "$demo/storage", "IndexDirectory" : "$demo/storage",
  "StableAge" : 2,
  "Plugins" : [ $plugins ],
  "UserMetadata" : { "ComclQuality" : 4201, "ComclQualityReasons" : 4202, "ComclModel" : 4203, "ComclScores" : 4204 },
  "UserContentType" : { "comcl-report" : [ 4200, "application/json" ] },
  "Comcl" : {
    "ImageSize" : 128,
    "Labels" : { "COVID-19" : "binary", "icu" : "binary" },
    "PrivilegedUsers" : [ "trainer" ],
    "Promotion" : "if-better"
  }
}
EOF
curl_as() { curl -sS -u "$1" "${@:2}"; }
trainer() { curl_as trainer:demo-trainer "$@"; }

setsid Orthanc "$demo/orthanc.json" >"$demo/orthanc.log" 2>&1 &
orthanc_pid=$!
echo "$orthanc_pid" >"$out/orthanc.pid"
stop_orthanc() { kill "$orthanc_pid" 2>/dev/null && wait "$orthanc_pid" 2>/dev/null || true; }
trap 'stop_orthanc' ERR INT
for _ in $(seq 300); do trainer -f "$api/system" >/dev/null 2>&1 && break; sleep 0.2; done
step "Orthanc $(trainer "$api/system" | json 'print(d["Version"])') with comcl on $api (log: $demo/orthanc.log)"
grep -o 'comcl: version.*' "$demo/orthanc.log"

# New studies for the end: the last six NIH patients and the real RG1 CR film (JPEG 2000).
mapfile -t nih_dirs < <(find "$out/dicom/nih" -mindepth 1 -maxdepth 1 -type d | sort)
later=("${nih_dirs[@]: -6}")
mapfile -t files < <(find "$out/dicom/covid" "$out/dicom/mhh" "${nih_dirs[@]:0:${#nih_dirs[@]}-6}" -name '*.dcm' | sort)
step "Store ${#files[@]} radiographs with storescu"
start=$(date +%s%N)
storescu -aet DEMO -aec COMCLDEMO -R 127.0.0.1 "$dicom_port" "${files[@]}"
printf '%d files stored in %d ms\n' "${#files[@]}" "$((($(date +%s%N) - start) / 1000000))"
for _ in $(seq 600); do
  indexed=$(trainer "$api/comcl/status" | json 'print(d["Instances"])')
  printf '\r  comcl indexed %s/%s' "$indexed" "${#files[@]}"
  [[ $indexed -ge ${#files[@]} ]] && break
  sleep 0.5
done
echo
trainer "$api/comcl/quality/summary" | json 'print("  quality flags:", d["ByFlag"], " reasons:", d["ByReason"])'

step "Import labels: COVID-19 (JSON rows by StudyInstanceUID), ICU admission (CSV by AccessionNumber)"
trainer -X POST "$api/comcl/labels" --data-binary "@$out/covid-labels.json" |
  json 'print("  JSON:", d["Stored"], "labels stored from", d["Rows"], "rows;", len(d["Problems"]), "problems")'
trainer -X POST "$api/comcl/labels" -H 'Content-Type: text/csv' --data-binary "@$out/mhh-icu.csv" |
  json 'print("  CSV: ", d["Stored"], "labels stored from", d["Rows"], "rows;", len(d["Problems"]), "problems")'
printf '  a user who may not train: '
curl_as viewer:demo-viewer -X POST "$api/comcl/train" -d '{}' | json 'print(d["HttpStatus"], d["Message"])'

# CPU-sized: ResNet-18 at 64 px, a few MedAug epochs. A GPU takes the paper's sizes (docs/rest.md).
request=${COMCL_DEMO_TRAINING:-'{"Method": "medaug", "Epochs": 4, "ImageSize": 64, "BatchSize": 32, "Seed": 1}'}
step "POST /comcl/train $request"
answer=$(trainer -X POST "$api/comcl/train" -d "$request")
echo "$answer" | json 'print(json.dumps(d))'
job=$(echo "$answer" | json 'print(d["ID"])')
run=$(echo "$answer" | json 'print(d["Run"])')
for _ in $(seq 3600); do
  state=$(trainer "$api/jobs/$job" | json '
c = d.get("Content", {})
print(d["State"], d["Progress"], c.get("Stage", "-"), c.get("Epoch", 0), c.get("Epochs", 0),
      "%.3f" % c.get("Loss", 0), "%.1f" % c.get("ImagesPerSecond", 0))')
  read -r job_state progress stage epoch epochs loss speed <<<"$state"
  printf '\r  job %s: %-8s %3s%%  stage %-9s epoch %s/%s  loss %s  %s images/s   ' \
    "${job:0:8}" "$job_state" "$progress" "$stage" "$epoch" "$epochs" "$loss" "$speed"
  [[ $job_state == Success || $job_state == Failure ]] && break
  sleep 2
done
echo
trainer "$api$run" | json '
print("  run", d["Id"], d["State"], d["Error"] or "")
if d["State"] == "succeeded":
    print("  seconds by stage:", {k: round(v, 1) for k, v in d["Stages"].items()})
    print("  pre-training loss per epoch:", [round(x, 3) for x in d["Loss"]])
    p = d["Promotion"]
    print("  promotion (%s): %s - %s" % (p["Policy"], "promoted" if p["Promoted"] else "not promoted", p["Reason"]))'
[[ $job_state == Success ]] || { tail -20 "$demo/orthanc.log"; exit 1; }
version=$(trainer "$api$run" | json 'print(d["ModelVersion"])')

step "GET /comcl/models/$version: held-out evaluation (patients never trained on)"
trainer "$api/comcl/models/$version" | json '
mean = lambda v: v["mean"] if isinstance(v, dict) else v
fmt = lambda v: "n/a" if v is None or mean(v) is None else "%.3f" % mean(v)
print("  version", d["Version"], d["Status"], "method", d["Method"], "created", d["CreatedAt"])
for l in d["Metrics"]["labels"]:
    print("  %-9s AUC %s  accuracy %s  on %d held-out images (%d positive), heads fitted on %d" % (
        l["finding"], fmt(l.get("auc")), fmt(l.get("accuracy")), l["testImages"], l["testPositives"],
        l["labelledTrainImages"]))
    for q in l.get("byQuality", []):
        if q.get("images"):
            print("      quality %-7s %3d images  AUC %s" % (q["level"], q["images"], fmt(q.get("auc"))))'
rescore=$(trainer "$api/comcl/runs" | json 'print((d[-1]["Promotion"].get("Activation") or {}).get("RescoreJob") or "")')
if [[ -n $rescore ]]; then
  for _ in $(seq 600); do
    state=$(trainer "$api/jobs/$rescore" | json 'print(d["State"], d["Progress"])')
    printf '\r  re-scoring the archive with version %s: %s%%   ' "$version" "${state#* }"
    [[ ${state% *} == Success || ${state% *} == Failure ]] && break
    sleep 1
  done
  echo
fi

step "Store new studies (six NIH patients, the RG1 CR film as JPEG 2000) and read their scores"
before=$(trainer "$api/studies" | json 'print(" ".join(d))')
mapfile -t new_files < <(find "${later[@]}" -name '*.dcm' | sort)
storescu -aet DEMO -aec COMCLDEMO -R 127.0.0.1 "$dicom_port" "${new_files[@]}"
trainer -X POST "$api/instances" --data-binary "@$data/dicom_samples/RG1_J2KI_CR_chest_PA.dcm" >/dev/null
expected=$((${#new_files[@]} + 1))
for _ in $(seq 300); do
  new=$(trainer "$api/studies" | json "print(' '.join(s for s in d if s not in '$before'.split()))")
  done_count=0
  for study in $new; do
    [[ $(trainer "$api/comcl/studies/$study" | json 'print(d.get("Annotated", False))' 2>/dev/null) == True ]] &&
      done_count=$((done_count + 1))
  done
  printf '\r  annotated %s/%s new studies' "$done_count" "$expected"
  [[ $done_count -ge $expected ]] && break
  sleep 1
done
echo
printf '  %-20s %-5s %-8s %-26s %s\n' patient model quality reasons scores
for study in $new; do
  trainer "$api/comcl/studies/$study" | json '
r = d["Report"]
q = r.get("Quality", {})
scores = ", ".join("%s %.2f" % (k, v) for k, v in sorted(r.get("Scores", {}).items()))
print("  %-20s %-5s %-8s %-26s %s" % (r.get("Study", {}).get("PatientID", "?"), d["ModelVersion"],
      q.get("Flag", "-"), ",".join(q.get("Reasons", [])) or "-", scores or r.get("ModelMessage", "")))'
done

step "GET /comcl/status"
trainer "$api/comcl/status" | json 'print(json.dumps({k: d[k] for k in ("Device", "Instances", "ByQualityFlag", "StudiesAnnotated", "ActiveModel", "LatencyMs")}, indent=1))'
if [[ -n ${COMCL_DEMO_STARTED:-} ]]; then
  printf '\nThe demo took %d s (build included).\n' "$(($(date +%s) - COMCL_DEMO_STARTED))"
fi
if [[ $stop == true ]]; then
  stop_orthanc
  rm -f "$out/orthanc.pid"
  echo "Orthanc stopped."
else
  printf '\nOrthanc keeps running: open %s/app/explorer.html (user trainer / demo-trainer, or viewer / demo-viewer)\n' "$api"
  printf 'Stop it with: kill %s\n' "$orthanc_pid"
fi
