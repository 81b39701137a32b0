#!/usr/bin/env bash
# The README's demo command: installs, builds, runs comcl on the real radiographs in ../shared/data and on a
# synthetic archive, then starts Orthanc with the plugin on localhost, sends the studies with storescu and
# shows what the plugin made of them. Output goes to out/demo/. `--keep` leaves Orthanc running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
comcl=${COMCL_BUILD_DIR:-build}/tools/comcl/comcl
data=${COMCL_SHARED_DATA:-../shared/data}
out=out/demo
rm -rf "$out" && mkdir -p "$out"

step() { printf '\n=== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "Decode a real MONOCHROME1 15-bit CR chest film to the normalised training image" \
  "$comcl" decode "$data/dicom_samples/RG1_CR_chest_PA_uncompressed.dcm" --out "$out/rg1.png"
printf '\n=== The same film as JPEG 2000: DCMTK has no codec, so comcl says so\n'
"$comcl" decode "$data/dicom_samples/RG1_J2KI_CR_chest_PA.dcm" --out "$out/rg1-j2k.png" || true

step "Write a synthetic archive (6 patients x 3 studies, frontal + lateral, lesions, degradations)" \
  "$comcl" synth --out "$out/synthetic" --patients 6 --studies 3 --size 512 --seed 7 --degraded-fraction 0.5

step "Index the real MHH COVID-19 chest radiographs" \
  "$comcl" index "$data/mhh_covid_cxr/dicom" --db "$out/comcl.sqlite"
step "Index the sample films and the synthetic archive into the same database" \
  "$comcl" index "$data/dicom_samples" --db "$out/comcl.sqlite"
"$comcl" index "$out/synthetic" --db "$out/comcl.sqlite"

quality_table() {
  sqlite3 -header -column "$out/comcl.sqlite" \
    "SELECT i.patient_key AS patient, i.view_position AS view, i.image_cols || 'x' || i.image_rows AS size,
            printf('%.0f', q.sharpness) AS sharpness, printf('%.2f', q.noise) AS noise,
            printf('%.3f', q.clip_low) AS black, printf('%.2f', q.dynamic_range) AS range,
            q.flag AS flag, q.reasons AS reasons, replace(i.source, '$out/', '') AS file
       FROM instances i JOIN quality q ON q.instance_id = i.id ORDER BY $1 LIMIT 6;"
}
printf '\n=== Quality metrics: least sharp images\n'
quality_table "q.sharpness"
printf '\n=== Quality metrics: noisiest images\n'
quality_table "q.noise DESC"

bash scripts/demo_orthanc.sh "$out" "$@"
printf '\nDone: images in %s, database %s/comcl.sqlite, Orthanc demo in %s/orthanc\n' "$out" "$out" "$out"
