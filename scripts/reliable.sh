#!/bin/sh
# The shipped zoo under the first version of the reliable protocol at eps 8/255 (README "The comparison"), into
# results/reliable.csv: the four headline entries on the first 1,000 test images, the clean model and the two ablations on 500.
# Every finished stage is kept, so it resumes where it stopped. Usage: scripts/reliable.sh
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
R=.venv/bin/robench
set -e
for m in lif-gn stable-gn lif-at stable-at; do
  $R attack --model "fmnist-vgg11-$m" --suite reliable-v1 --n 1000 --name reliable
done
for m in lif-clean dlif-gn lif-gn-mppd; do
  $R attack --model "fmnist-vgg11-$m" --suite reliable-v1 --n 500 --name reliable
done
