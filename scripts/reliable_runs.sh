#!/bin/sh
# The real reliable cascade at eps 8/255 on the first 200 test images (images 100-199 are the held-out split of the
# selection tables in benchmarks/), into results/reliable.csv. SUITE picks the stage list: `reliable` (default) is
# the newest version, `reliable-v2` an older one. Every finished run is kept, so it resumes.
# Usage: [SUITE=reliable-vN] scripts/reliable_runs.sh [MODEL...]   (default: the models README's tables show)
cd "$(dirname "$0")/.." || exit 1
export ROBENCH_THREADS="${ROBENCH_THREADS:-1}"
export ROBENCH_TRUST_CODE="${ROBENCH_TRUST_CODE:-1}"  # the shipped foreign entries run their own code
R="${ROBENCH:-.venv/bin/robench}"
SUITE="${SUITE:-reliable}"
MODELS="${*:-fmnist-vgg11-lif-gn fmnist-vgg11-stable-gn fmnist-vgg11-lif-gn-s1 fmnist-vgg11-stable-gn-s1 fmnist-vgg11-lif-clean}"
set -e
for m in $MODELS; do
  $R attack --model "$m" --suite "$SUITE" --n 200 --name reliable --trust-code
done
