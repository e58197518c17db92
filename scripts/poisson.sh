#!/bin/sh
# The Poisson-coded pair of README "Stochastic (Poisson) coding": trains fmnist-vgg11-{lif,stable}-gn-poisson (the
# zoo recipe, zoo/recipes.toml) unless present, then attacks both with best-iterate PGD-20 at eps 8/255 (L-inf)
# through BPTT, once with one draw per gradient step (K = 1) and once averaging K = 8 draws (EOT); every verdict
# re-classifies with M = 16 fresh draws. Rows go to results/poisson.csv (resumable).
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
R="${ROBENCH:-.venv/bin/robench}"
OUT="${OUT:-results}"
N="${N:-100}"
IDS="fmnist-vgg11-lif-gn-poisson fmnist-vgg11-stable-gn-poisson"
set -e
[ -n "$NO_TRAIN" ] || $R zoo build $IDS
for k in 1 8; do
  for m in $IDS; do
    $R attack --model "$m" --attack pgd-best --steps 20 --eps 8/255 --grad bptt --eot "$k" --draws 16 \
      --n "$N" --out "$OUT" --name poisson
  done
done
