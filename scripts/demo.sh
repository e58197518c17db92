#!/bin/sh
# `make demo`: attack every shipped vgg11 entry side by side on the shipped 1,000-image test subset
# (FGSM and PGD-10 at eps 8/255, BPTT and rate gradients and their per-sample worst case), then write the
# report. Offline; results go to results/demo/ (git-ignored), so each run starts fresh.
set -e
R=.venv/bin/robench
OUT=results/demo
N=${DEMO_N:-500}
rm -rf "$OUT"
$R zoo verify
$R attack --model vgg11 --eps 8/255 --split subset --n "$N" --out "$OUT"
$R report --results "$OUT" --out "$OUT/report"
echo "demo report: $OUT/report (tables .md/.csv/.tex, curves .png)"
