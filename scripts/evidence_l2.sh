#!/bin/sh
# The L2 evidence of README "Threat models": attacks x gradient paths in L2 (eps 0.5) on the four headline vgg11
# entries, first 200 test images, per-sample masks kept, into results/evidence-l2.csv. Images 0-99 choose the
# L2 stage list (scripts/select_stages.py --eps 0.5), images 100-199 check the choice. Finished cells are
# skipped, so it resumes. Usage: scripts/evidence_l2.sh [MODEL...]   (ROBENCH=..., OUT=... as evidence.sh)
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
R="${ROBENCH:-.venv/bin/robench}"
OUT="${OUT:-results}"
MODELS="${*:-fmnist-vgg11-lif-gn fmnist-vgg11-stable-gn fmnist-vgg11-lif-at fmnist-vgg11-stable-at}"
run() {  # one attack x path group over every model (a failing cell is logged, the rest goes on)
  for m in $MODELS; do
    $R attack --model "$m" --norm L2 --n 200 --eps 0.5 --out "$OUT" --name evidence-l2 "$@" \
      || echo "evidence-l2: FAILED on $m: $*" >&2
  done
}
# breadth first, the groups most likely to matter first (whatever has finished is a complete slice): the paths
# and attacks that carried the L-inf matrix (docs/protocol.md), then the black box
run --attack pgd-best --steps 50 --grad 'bptt,arctan:a=4|8,assg:A=0.425,triangle:w=0.5'
run --attack apgd-ce --steps 100 --restarts 2 --grad 'arctan:a=4,assg:A=0.425'
run --attack sa-pgd --steps 100 --grad 'arctan:a=4,assg:A=0.425'
run --attack square --queries 1000
