#!/bin/sh
# `make demo`: attack the shipped vgg11 entries (seed 0) side by side on the shipped 1,000-image test subset:
# FGSM and best-iterate PGD-10 at eps 8/255 on the first 200 images, through the BPTT and rate gradients, then
# write the report, whose headline is the per-sample worst case over every cell (with Wilson
# intervals) and its breakdown by the attack and path that first broke each image.
# Offline; results go to results/demo/ (git-ignored), so each run starts fresh.
set -e
R=.venv/bin/robench
OUT=results/demo
N=${DEMO_N:-200}
rm -rf "$OUT"
$R zoo verify
MODELS=""
for id in lif-clean lif-gn stable-gn lif-at stable-at dlif-gn lif-gn-mppd lif-rat stable-rat; do
  [ -f "zoo/fmnist-vgg11-$id.json" ] && MODELS="$MODELS --model fmnist-vgg11-$id"
done
$R attack $MODELS --attack fgsm,pgd-best --steps 10 --grad both --eps 8/255 --split subset --n "$N" --out "$OUT"
$R report --results "$OUT" --out "$OUT/report"
echo "demo report: $OUT/report (tables .md/.csv/.tex, figures .png/.pdf/.svg: curves, breakdown)"
