#!/usr/bin/env bash
# The plugin part of the demo: Orthanc with comcl on localhost (embedded SQLite, temporary storage), the real
# radiographs and a synthetic archive sent with DCMTK's storescu, then what the plugin made of them through
# its REST API. Usage: demo_orthanc.sh OUT_DIR [--keep]   (--keep leaves Orthanc running)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: demo_orthanc.sh OUT_DIR [--keep]}
keep=${2:-}
build=${COMCL_BUILD_DIR:-build}
data=${COMCL_SHARED_DATA:-../shared/data}
rm -rf "$out/orthanc" && mkdir -p "$out/orthanc"
demo=$(realpath "$out/orthanc")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
dicom_port=$(free_port)
api="http://127.0.0.1:$http_port"
plugins="\"$PWD/$build/plugin/libOrthancComcl.so\""
gdcm=/usr/share/orthanc/plugins/libOrthancGdcm.so
[[ -f $gdcm ]] && plugins="$plugins, \"$gdcm\""  # JPEG 2000 and other codecs DCMTK lacks

cat >"$demo/orthanc.json" <<EOF
{
  "Name" : "comcl demo",
  "HttpPort" : $http_port, "DicomPort" : $dicom_port, "DicomAet" : "COMCLDEMO",
  "RemoteAccessAllowed" : false, "AuthenticationEnabled" : false,
  "StorageDirectory" : "$demo/storage", "IndexDirectory" : "$demo/storage",
  "StableAge" : 2,
  "Plugins" : [ $plugins ],
  "UserMetadata" : { "ComclQuality" : 4201, "ComclQualityReasons" : 4202, "ComclModel" : 4203, "ComclScores" : 4204 },
  "UserContentType" : { "comcl-report" : [ 4200, "application/json" ] },
  "Comcl" : { "StructuredReport" : true }
}
EOF

Orthanc "$demo/orthanc.json" >"$demo/orthanc.log" 2>&1 &
orthanc_pid=$!
stop_orthanc() { kill "$orthanc_pid" 2>/dev/null && wait "$orthanc_pid" 2>/dev/null || true; }
[[ $keep == --keep ]] || trap stop_orthanc EXIT
for _ in $(seq 300); do curl -sf "$api/system" >/dev/null && break; sleep 0.2; done
curl -sf "$api/system" >/dev/null || { tail -20 "$demo/orthanc.log"; exit 1; }
printf '\n=== Orthanc %s with comcl on %s (log: %s/orthanc.log)\n' \
  "$(curl -s "$api/system" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Version"])')" "$api" "$demo"
grep -o 'comcl: version.*' "$demo/orthanc.log"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

printf '\n=== Store the real MHH radiographs and a synthetic archive (storescu), and the JPEG 2000 RG1 film (REST)\n'
"$build/tools/comcl/comcl" synth --out "$demo/synthetic" --patients 4 --studies 2 --size 512 --seed 3 \
  --encodings Mono2Uint16 Mono1Uint16 --degradations Blur Noise Underexposed LowResolution \
  --degraded-fraction 0.5 >/dev/null
# The JPEG 2000 copy of RG1 first, through REST (storescu would have to be told to propose JPEG 2000); its
# uncompressed twin has the same SOP instance UID, so Orthanc keeps the JPEG 2000 one.
j2k=$data/dicom_samples/RG1_J2KI_CR_chest_PA.dcm
curl -sf -X POST "$api/instances" --data-binary "@$j2k" -H 'Content-Type: application/dicom' >/dev/null
echo "$(basename "$j2k") stored with POST /instances"
mapfile -t files < <(find "$data/mhh_covid_cxr/dicom" "$demo/synthetic" -name '*.dcm' | sort)
start=$(date +%s%N)
storescu -aet DEMO -aec COMCLDEMO -R 127.0.0.1 "$dicom_port" "${files[@]}"
printf '%d files stored with storescu in %d ms\n' "${#files[@]}" "$((($(date +%s%N) - start) / 1000000))"
files+=("$j2k")

printf '\n=== Waiting for comcl to index every instance and annotate every study\n'
studies=$(curl -s "$api/studies" | json 'print(len(d))')
for _ in $(seq 600); do
  line=$(curl -s "$api/comcl/status" | json "print(d['Instances'], d['StudiesAnnotated'], d['Queues']['Ingest'])")
  read -r indexed annotated queued <<<"$line"
  printf '\r  indexed %s/%s instances, annotated %s/%s studies, queue %s   ' "$indexed" "${#files[@]}" \
    "$annotated" "$studies" "$queued"
  [[ $indexed -ge ${#files[@]} && $annotated -ge $studies ]] && break
  sleep 0.5
done
echo

printf '\n=== GET /comcl/quality/summary\n'
curl -s "$api/comcl/quality/summary" | json 'print(json.dumps({k: d[k] for k in ("Instances", "ByDecodeState", "ByFlag", "ByReason")}, indent=1))'

printf '\n=== Studies flagged for a look (study metadata ComclQuality != good)\n'
for study in $(curl -s "$api/studies" | json 'print(" ".join(d))'); do
  flag=$(curl -s "$api/studies/$study/metadata/ComclQuality" || true)
  [[ $flag == good ]] && continue
  reasons=$(curl -s "$api/studies/$study/metadata/ComclQualityReasons" || true)
  patient=$(curl -s "$api/studies/$study" | json 'print(d["PatientMainDicomTags"].get("PatientID", ""))')
  printf '  %-22s patient %-12s %-7s %s\n' "$study" "$patient" "$flag" "$reasons"
done | head -15

printf '\n=== The JPEG 2000 film, decoded through Orthanc'"'"'s decoder (orthanc-gdcm)\n'
for id in $(curl -s "$api/instances" | json 'print(" ".join(d))'); do
  ts=$(curl -s "$api/instances/$id/metadata/TransferSyntax" || true)
  if [[ $ts == 1.2.840.10008.1.2.4.9* ]]; then
    curl -s "$api/comcl/instances/$id" | json 'print("  decode:", d["DecodeState"], "-", d["DecodeReason"]); print("  quality:", d["Quality"]["Flag"], d["Quality"]["Reasons"] or "(no reasons)")'
  fi
done

first=$(curl -s "$api/studies" | json 'print(d[0])')
printf '\n=== One study report (attachment comcl-report, shown as a download in Orthanc Explorer)\n'
curl -s "$api/studies/$first/attachments/comcl-report/data" |
  json 'print(json.dumps({k: d[k] for k in ("Model", "ModelMessage", "Quality", "Scores") if k in d}, indent=1)); print("images:", [(i["ViewPosition"], i["Quality"]["Flag"]) for i in d["Images"]])'
sr=$(curl -s "$api/comcl/studies/$first" | json 'print(d["StructuredReport"])')
printf '\n=== Its DICOM SR (%s), in the same study\n' "$sr"
curl -s "$api/instances/$sr/file" -o "$demo/report-sr.dcm" && dsrdump "$demo/report-sr.dcm" | sed -n '1,30p'

printf '\n=== GET /comcl/status\n'
curl -s "$api/comcl/status" | json 'print(json.dumps({k: d[k] for k in ("Version", "Device", "Instances", "ByDecodeState", "ByQualityFlag", "StudiesAnnotated", "ActiveModel", "Counters", "LatencyMs")}, indent=1))'
printf '\n=== comcl metrics in /tools/metrics-prometheus\n'
curl -s "$api/tools/metrics-prometheus" | grep '^comcl_' || true

if [[ $keep == --keep ]]; then
  printf '\nOrthanc keeps running: open %s/app/explorer.html (stop: kill %s)\n' "$api" "$orthanc_pid"
fi
