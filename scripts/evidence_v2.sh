#!/bin/sh
# The evidence matrix of the reliable protocol, version 2 (docs/protocol.md): attacks x gradient paths on a varied
# set of models, first 200 test images at eps 8/255, per-sample masks kept, into results/evidence-v2.csv.
# Images 0-99 are the selection split (scripts/select_stages.py chooses the stages on them), images 100-199 the
# validation split it never sees. Cells are run breadth first (one attack x path group over every model before
# the next group), so whatever has finished is a complete slice; finished cells are skipped, so it resumes.
# Usage: scripts/evidence_v2.sh MODEL...   (ROBENCH=... picks the command, OUT=... the results folder, NAME=... the
# results file's name, default evidence-v2; PARTS="1 2 3" runs only those numbered groups below, default all five)
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
export ROBENCH_TRUST_CODE="${ROBENCH_TRUST_CODE:-1}"  # the matrix runs the shipped foreign entries' code
R="${ROBENCH:-.venv/bin/robench}"
OUT="${OUT:-results}"
MODELS="$*"
NAME="${NAME:-evidence-v2}"
PARTS="${PARTS:-1 2 3 4 5}"
want() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
foreign() { grep -q '"arch": "foreign"' "zoo/$1.json" 2>/dev/null; }
run() {  # run GROUP-ARGS (and the paths in $GRAD, if any) over every model; a failing cell is logged, the matrix goes on
  for m in $MODELS; do
    g="$GRAD"  # a foreign neuron cannot take `rate` (it needs robench's own membrane; docs/protocol.md): dropped
    foreign "$m" && g=$(printf %s "$g" | sed 's/,rate//; s/rate,//')
    $R attack --model "$m" --n 200 --eps 8/255 --out "$OUT" --name "$NAME" --trust-code ${g:+--grad "$g"} "$@" \
      || echo "evidence-v2: FAILED on $m: $* $g" >&2
  done
}
# 1. the cheap wide sweep: best-iterate PGD-50 through every path family and sharpness
want 1 && GRAD='bptt,rate,arctan:a=4|8|16,sigmoid:k=16|32' run --attack pgd-best --steps 50
want 1 && GRAD='triangle:w=0.25|0.5|2,rectangle:w=0.5,assg:A=0.35|0.425|0.49' run --attack pgd-best --steps 50
# 2. the official APGD-CE (100 steps, 2 restarts) through the strongest families
want 2 && GRAD='arctan:a=4|8,assg:A=0.425' run --attack apgd-ce --steps 100 --restarts 2
# 3. SA-PGD (100 steps) through sharp surrogates
want 3 && GRAD='arctan:a=4|8,triangle:w=0.5' run --attack sa-pgd --steps 100
# 4. the black-box check with a large budget
want 4 && GRAD= run --attack square --queries 5000
# 5. APGD-CE through more paths, and the other APGD losses
want 5 && GRAD='bptt,sigmoid:k=16,arctan:a=16' run --attack apgd-ce --steps 100 --restarts 2
want 5 && GRAD='arctan:a=8' run --attack apgd-dlr --steps 100
want 5 && GRAD='arctan:a=8' run --attack apgd-t --steps 100
