#!/usr/bin/env bash
# The real-data experiment of docs/experiments.md (issue 4): on the MHH COVID-19 films and the COVID-19
# chest X-ray subset, pre-train ResNet-18 with MoCo v2 (instance pairs) and MedAug (same patient, all
# studies; same patient, same study/date), then run MedAug's linear protocol on a real label against a
# randomly initialised encoder: mean ± std of the test AUC over random label draws, held-out patients.
#
# usage: bash scripts/experiment-medaug.sh [--out DIR] [--epochs 30] [--size 64] [--batch 32] [--draws 5]
#                                          [--budgets "25% 100%"] [--seed 0] [--comcl PATH]
# CPU-sized by default (64 px, 30 epochs: about half an hour on 2 cores). Writes DIR/results.md and the JSON
# of every evaluation; re-running reuses finished pre-training runs (each run directory resumes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$here/../shared/data"
out="$here/out/experiment-medaug"
epochs=30
size=64
batch=32
draws=5
budgets="25% 100%"
seed=0
comcl="${COMCL:-$here/build/tools/comcl/comcl}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --draws) draws="$2"; shift 2 ;;
    --budgets) budgets="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --comcl) comcl="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$comcl" ] || { echo "no comcl binary at $comcl (bash scripts/build.sh, or --comcl PATH)" >&2; exit 2; }
mkdir -p "$out"

budget_args=()
for b in $budgets; do budget_args+=(--budget "$b"); done

# dataset | folder | label | study grouping for "same study" (mhh: every film is its own study, so its
# films are grouped by day)
datasets=(
  "mhh|mhh_covid_cxr|icu_ever|date"
  "covid|covid_chestxray_subset|COVID-19|uid"
)

for entry in "${datasets[@]}"; do
  IFS='|' read -r name folder label grouping <<<"$entry"
  db="$out/$name.sqlite"
  if [ ! -f "$db" ]; then
    "$comcl" import-manifest "$data/$folder" --db "$db" --size 256 >"$out/$name-import.txt"
  fi
  "$comcl" pairs --db "$db" --study-by "$grouping" >"$out/$name-pairs.txt"

  common=(--db "$db" --epochs "$epochs" --batch-size "$batch" --image-size "$size" --seed "$seed"
          --device auto --quiet)
  declare -A runs=(
    [moco]="--method moco"
    [medaug-all-studies]="--method medaug --strategy same-patient/all-studies"
    [medaug-same-study]="--method medaug --strategy same-patient/same-study --study-by $grouping"
  )
  for method in moco medaug-all-studies medaug-same-study; do
    run="$out/$name-$method"
    # shellcheck disable=SC2086
    "$comcl" pretrain "${common[@]}" --run "$run" ${runs[$method]} | tee "$out/$name-$method-pretrain.txt"
  done
  for method in random moco medaug-all-studies medaug-same-study; do
    if [ "$method" = random ]; then source=(--random --image-size "$size"); else source=(--encoder "$out/$name-$method/encoder"); fi
    "$comcl" linear-eval --db "$db" "${source[@]}" --label "$label" "${budget_args[@]}" --draws "$draws" \
      --seed "$seed" --device auto --json "$out/$name-$method-linear.json" | tee "$out/$name-$method-linear.txt"
  done
  unset runs
done

python3 - "$out" "$epochs" "$size" "$batch" "$draws" <<'PY'
import json, sys, pathlib
out, epochs, size, batch, draws = sys.argv[1:]
rows = ["| data set (label) | budget | random init | MoCo v2 (instance pairs) | MedAug same patient, all studies | MedAug same patient, same study |",
        "|---|---|---|---|---|---|"]
for name, label in (("mhh", "icu_ever"), ("covid", "COVID-19")):
    results = {m: json.load(open(pathlib.Path(out) / f"{name}-{m}-linear.json"))
               for m in ("random", "moco", "medaug-all-studies", "medaug-same-study")}
    budgets = [l["budget"] for l in results["random"]["labels"]]
    for i, budget in enumerate(budgets):
        cells = []
        for m in ("random", "moco", "medaug-all-studies", "medaug-same-study"):
            l = results[m]["labels"][i]
            cells.append(f"{l['auc']['mean']:.3f} ± {l['auc']['std']:.3f}")
        l = results["random"]["labels"][i]
        rows.append(f"| {name} ({label}; test {l['testImages']} images, {l['testPositives']} positive) | "
                    f"{budget} (train {l['draws'][0]['trainImages']}) | " + " | ".join(cells) + " |")
text = (f"Linear protocol, test AUC mean ± std over {draws} label draws; ResNet-18, {size} px, "
        f"{epochs} epochs, batch {batch}.\n\n" + "\n".join(rows) + "\n")
(pathlib.Path(out) / "results.md").write_text(text)
print(text)
PY
