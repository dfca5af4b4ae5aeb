#!/usr/bin/env bash
# The mean of a cached training stage's loss terms over its last N iterations, from the
# stage's `curve.csv` (one row per iteration: iter,lr,total,lab,fm,mask_rate,dist_lab,...).
#
#   bash scripts/curve-tail.sh PROFILE STAGE [N=50]
#   bash scripts/curve-tail.sh quick baseline/synth-cars/labelled/s0
#
# Run from the repository root. Uses `tofa-pipeline` from PATH, or $TOFA_PIPELINE, and the
# cache `.tofa-cache`, or $TOFA_CACHE_DIR; the stage must be cached.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
profile=$1 stage=$2 n=${3:-50}
bin=${TOFA_PIPELINE:-tofa-pipeline}
key=$("$bin" -p "$profile" show "$stage" | awk '$1 == "key:" {print $2}')
curve="${TOFA_CACHE_DIR:-.tofa-cache}/entries/$key/out/curve.csv"
[ -f "$curve" ] || { echo "error: $stage ($profile) has no cached curve at $curve: run it first" >&2; exit 1; }
python3 - "$curve" "$n" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
tail = rows[-int(sys.argv[2]):]
print(f"{sys.argv[1]}: iterations {tail[0]['iter']}-{tail[-1]['iter']} of {rows[-1]['iter']}")
for col in rows[0]:
    if col in ("iter", "lr"):
        continue
    v = [float(r[col]) for r in tail if r[col] != ""]
    if v:
        print(f"  {col}: {sum(v) / len(v):.4f}")
PY
