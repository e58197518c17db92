#!/bin/sh
# The RAT entries and the seed replicates (README "Across seeds, and RAT"): the reliable protocol at eps 8/255
# into results/reliable.csv, on the first 1,000 test images for the RAT entries (as for the four seed-0 entries
# of scripts/reliable.sh; the results also keep an earlier run on 300) and 500 for the seed replicates (machine
# time; paired comparisons use the first min(n) images of both), and
# Gaussian noise (sigma 0.1 and 0.2, all 10,000 test images) into results/noise.csv for every seed of the six
# recipes. Entries not yet in the zoo are skipped (train them with `make zoo`); finished cells and cascade
# stages are kept, so it resumes where it stopped. Usage: scripts/seeds.sh
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
R=.venv/bin/robench
set -e
have() { test -f "zoo/fmnist-vgg11-$1.safetensors"; }
for m in lif-rat stable-rat; do
  if have "$m"; then $R attack --model "fmnist-vgg11-$m" --suite reliable --n 1000 --name reliable; fi
done
for s in 1 2; do
  for m in lif-gn stable-gn lif-at stable-at lif-rat stable-rat; do
    if have "$m-s$s"; then $R attack --model "fmnist-vgg11-$m-s$s" --suite reliable --n 500 --name reliable; fi
  done
done
for m in lif-gn stable-gn lif-at stable-at lif-rat stable-rat; do
  for id in "$m" "$m-s1" "$m-s2"; do
    if have "$id"; then $R attack --model "fmnist-vgg11-$id" --attack gaussian --eps 0.1,0.2 --n 10000 --name noise; fi
  done
done
