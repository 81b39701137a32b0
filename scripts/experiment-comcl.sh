#!/usr/bin/env bash
# CoMCL against its baselines and its ablations on real radiographs, in one command (docs/experiments.md,
# issue 5): pre-train ResNet-18 with MoCo v2, MedAug and CoMCL (full, w/o L_qual, w/o L_img, w/o SPL, SPL
# replaced by a fixed top-k), then run the linear protocol on the lesion label for each encoder, for a
# randomly initialised one and for the supervised-only baseline (fine-tuning from random initialisation):
# test AUC on held-out patients, per quality level of the test images (good / usable / reject, the quality
# assessment's flags) and under a synthetic degradation sweep of the test images (severity 0..1, the same
# degraded images for every method). Several pre-training seeds; each seed's evaluation draws label subsets.
#
# usage: bash scripts/experiment-comcl.sh [--out DIR] [--data FOLDER] [--label L] [--epochs 15] [--size 64]
#                                         [--batch 16] [--draws 3] [--seeds "0 1"] [--methods "..."]
#                                         [--sweep composite] [--lesion-source cam] [--comcl PATH]
#   --data    a folder of ../shared/data with manifest.csv (default covid_chestxray_subset: COVID-19
#             positive = lesion images, negative = healthy images)
#   --lesion-source  where CoMCL's lesion boxes come from: cam (default), stored, none (random windows)
#   --methods a subset of: random supervised moco medaug comcl comcl-no-quality comcl-no-image comcl-no-spl
#             comcl-fixed-top-k (default: all)
# CPU-sized by default (64 px, 15 epochs, 2 seeds: about an hour on 2 idle cores). Writes DIR/results.md
# (the table), DIR/curve.md (AUC against severity) and every run's logs and JSON; re-running reuses the
# finished pre-training runs (each run directory resumes) and evaluations; CoMCL's runs are named with their
# lesion source (seedS-comcl-boxes-cam), so a run with other boxes is never taken for one with these.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$here/../shared/data"
out="$here/out/experiment-comcl"
folder=covid_chestxray_subset
label=COVID-19
epochs=15
size=64
batch=16
draws=3
seeds="0 1"
sweep=composite
lesion_source=cam
methods="random supervised moco medaug comcl comcl-no-quality comcl-no-image comcl-no-spl comcl-fixed-top-k"
comcl="${COMCL:-$here/build/tools/comcl/comcl}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --data) folder="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --draws) draws="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --methods) methods="$2"; shift 2 ;;
    --sweep) sweep="$2"; shift 2 ;;
    --lesion-source) lesion_source="$2"; shift 2 ;;
    --comcl) comcl="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$comcl" ] || { echo "no comcl binary at $comcl (bash scripts/build.sh, or --comcl PATH)" >&2; exit 2; }
mkdir -p "$out"
db="$out/index.sqlite"
if [ ! -f "$out/index.done" ]; then
  rm -f "$db" "$db.images"
  "$comcl" import-manifest "$data/$folder" --db "$db" --size 256 >"$out/import.txt"
  touch "$out/index.done"
fi
severities=0,0.25,0.5,0.75,1

pretrain_args() {  # the method's comcl pretrain flags
  case "$1" in
    moco) echo "--method moco" ;;
    medaug) echo "--method medaug --strategy same-patient/all-studies" ;;
    comcl) echo "--method comcl --lesion-label $label --lesion-source $lesion_source" ;;
    comcl-no-quality) echo "--method comcl --lesion-label $label --lesion-source $lesion_source --ablation no-quality-term" ;;
    comcl-no-image) echo "--method comcl --lesion-label $label --lesion-source $lesion_source --ablation no-image-term" ;;
    comcl-no-spl) echo "--method comcl --lesion-label $label --lesion-source $lesion_source --ablation no-spl" ;;
    comcl-fixed-top-k) echo "--method comcl --lesion-label $label --lesion-source $lesion_source --ablation fixed-top-k" ;;
    *) echo "" ;;
  esac
}

evaluate=(--db "$db" --label "$label" --draws "$draws" --device auto --by-quality --sweep "$sweep"
          --sweep-severities "$severities")
# A run's file name: CoMCL runs carry their lesion source, so that runs with other boxes are never reused.
stem() {
  case "$1" in
    comcl*) echo "seed$2-$1-boxes-$lesion_source" ;;
    *) echo "seed$2-$1" ;;
  esac
}
for seed in $seeds; do
  for method in $methods; do
    name=$(stem "$method" "$seed")
    json="$out/$name.json"
    [ -f "$json" ] && continue
    case "$method" in
      random)
        "$comcl" linear-eval "${evaluate[@]}" --random --image-size "$size" --seed "$seed" --json "$json.tmp" \
          >"$out/$name-eval.txt" ;;
      supervised)
        "$comcl" finetune "${evaluate[@]}" --random --image-size "$size" --seed "$seed" --json "$json.tmp" \
          >"$out/$name-eval.txt" ;;
      *)
        run="$out/$name"
        # shellcheck disable=SC2046  # the method's flags are words
        "$comcl" pretrain --db "$db" --run "$run" $(pretrain_args "$method") --epochs "$epochs" \
          --batch-size "$batch" --image-size "$size" --seed "$seed" --device auto --quiet \
          >"$out/$name-pretrain.txt"
        "$comcl" linear-eval "${evaluate[@]}" --encoder "$run/encoder" --seed "$seed" --json "$json.tmp" \
          >"$out/$name-eval.txt" ;;
    esac
    mv "$json.tmp" "$json"
    echo "seed $seed, $method: done" >&2
  done
done

python3 - "$out" "$label" "$epochs" "$size" "$batch" "$draws" "$seeds" "$sweep" "$lesion_source" $methods <<'PY'
import json, math, pathlib, re, sys
out, label, epochs, size, batch, draws, seeds, sweep, lesion_source, *methods = sys.argv[1:]
out = pathlib.Path(out)
seeds = seeds.split()
names = {"random": "random init (linear)", "supervised": "supervised only (fine-tuned)", "moco": "MoCo v2",
         "medaug": "MedAug (same patient, all studies)", "comcl": "CoMCL", "comcl-no-quality": "CoMCL w/o L_qual",
         "comcl-no-image": "CoMCL w/o L_img", "comcl-no-spl": "CoMCL w/o SPL", "comcl-fixed-top-k": "CoMCL, fixed top-k"}

def stem(method, seed):  # as the shell's stem()
    return f"seed{seed}-{method}-boxes-{lesion_source}" if method.startswith("comcl") else f"seed{seed}-{method}"

def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"

def pretrain_figures(method):
    rates, shares = [], []
    for seed in seeds:
        path = out / f"{stem(method, seed)}-pretrain.txt"
        if not path.exists():
            continue
        text = path.read_text()
        m = re.search(r"([0-9.]+) images/s after the first step", text)
        if m:
            rates.append(float(m.group(1)))
        m = re.search(r"making views ([0-9.]+) % of the step time", text)
        if m:
            shares.append(float(m.group(1)))
    if not rates:
        return "–", "–"
    return f"{sum(rates) / len(rates):.1f}", (f"{sum(shares) / len(shares):.1f} %" if shares else "–")

levels, severities, rows, curve = None, None, [], []
for method in methods:
    clean, per_level, per_severity, accuracy = [], {}, {}, []
    info = None
    for seed in seeds:
        result = json.load(open(out / f"{stem(method, seed)}.json"))
        label_result = result["labels"][0]
        info = label_result
        for draw in label_result["draws"]:
            clean.append(draw.get("auc"))
            accuracy.append(draw.get("accuracy"))
            for entry in draw.get("byQuality", []):
                per_level.setdefault(entry["level"], []).append(entry.get("auc"))
            for entry in draw.get("sweep", []):
                per_severity.setdefault(entry["severity"], []).append(entry.get("auc"))
    if levels is None:
        levels = [entry["level"] for entry in info.get("byQuality", []) if entry["images"] > 0]
        level_counts = {entry["level"]: (entry["images"], entry.get("positives")) for entry in info.get("byQuality", [])}
        severities = sorted(per_severity)
        test = (info["testImages"], info["testPositives"])
    rate, share = pretrain_figures(method)
    rows.append(f"| {names.get(method, method)} | {stats(clean)} | {stats(accuracy)} | "
                + " | ".join(stats(per_level.get(level, [])) for level in levels) + f" | {rate} | {share} |")
    curve.append(f"| {names.get(method, method)} | " + " | ".join(stats(per_severity[s]) for s in severities) + " |")

header = ("| method | test AUC | accuracy | " + " | ".join(
    f"AUC, {level} ({level_counts[level][0]} images, {level_counts[level][1]} positive)" for level in levels)
    + " | pre-training images/s | making views |")
text = (f"Label {label}; linear protocol (supervised only: fine-tuning from random initialisation), test "
        f"patients {test[0]} images ({test[1]} positive); mean ± std over {len(seeds)} seeds x {draws} label "
        f"draws; ResNet-18, {size} px, {epochs} epochs, batch {batch}; CoMCL's lesion boxes: {lesion_source}. "
        f"CoMCL's images/s counts lesion samples.\n\n"
        + header + "\n|" + "---|" * (5 + len(levels)) + "\n" + "\n".join(rows) + "\n")
(out / "results.md").write_text(text)
curve_text = (f"Test AUC under the synthetic degradation sweep ({sweep}) of the held-out images, head fitted "
              f"on clean images; mean ± std over {len(seeds)} seeds x {draws} draws.\n\n| method | "
              + " | ".join(f"severity {s:g}" for s in severities) + " |\n|" + "---|" * (1 + len(severities))
              + "\n" + "\n".join(curve) + "\n")
(out / "curve.md").write_text(curve_text)
print(text)
print(curve_text)
PY
