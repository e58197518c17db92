#!/bin/sh
# The reliable protocol, version 2, at eps 8/255 on the first 200 test images (images 100-199 are the held-out
# split of benchmarks/selection.md), into results/reliable.csv. Every finished run is kept, so it resumes.
# Usage: scripts/reliable_v2.sh [MODEL...]   (default: the models README's version-2 table shows)
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
export ROBENCH_TRUST_CODE="${ROBENCH_TRUST_CODE:-1}"  # the shipped foreign entries run their own code
R="${ROBENCH:-.venv/bin/robench}"
MODELS="${*:-fmnist-vgg11-lif-gn fmnist-vgg11-stable-gn fmnist-sjnet-lif-sigmoid}"  # the third is not finished yet
set -e
for m in $MODELS; do
  $R attack --model "$m" --suite reliable --n 200 --name reliable --trust-code
done
