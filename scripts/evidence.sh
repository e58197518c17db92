#!/bin/sh
# The attack x gradient-path evidence of README "Attack strength on the zoo" (first 200 test images, eps 8/255),
# into results/evidence.csv; finished cells are skipped, so it resumes. Usage: scripts/evidence.sh [MODEL...]
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
R=.venv/bin/robench
MODELS="${*:-fmnist-vgg11-lif-gn fmnist-vgg11-stable-gn fmnist-vgg11-stable-at}"
P='bptt,triangle:w=0.5|2,arctan:a=1|4,rate,assg'
set -e
for m in $MODELS; do
  A="--model $m --n 200 --eps 8/255 --name evidence"
  $R attack $A --attack pgd --steps 10 --grad both                          # today's: final-iterate PGD-10
  $R attack $A --attack autoattack --aa-version custom --steps 10 --grad both  # today's: AutoAttack custom-10
  $R attack $A --attack pgd-best --steps 50 --grad "$P"
  $R attack $A --attack sa-pgd --steps 100 --grad "$P"
  $R attack $A --attack apgd-ce --steps 100 --restarts 2 --grad "$P"
done
