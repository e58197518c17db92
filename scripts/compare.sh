#!/bin/sh
# The shipped zoo's comparison (README "The shipped zoo"): every vgg11 entry under FGSM, Gaussian noise, PGD-10
# sweeps, the paper suite at 8/255 and AutoAttack, with BPTT and rate gradients and their per-sample worst
# case, appended to results/results.csv (cells already there are skipped), then the report.
# The sample counts are the benchmark's targets; override them (e.g. N_SWEEP=500) for a shorter run, and
# MODELS=<id or prefix> to evaluate one entry, STAGES="sweep paper" for some stages, AA_VERSION=custom
# (with AA_STEPS) for the much faster APGD-CE + APGD-T. Every row records its n.
set -e
R=${R:-.venv/bin/robench}
MODELS=${MODELS:-vgg11}
N_FGSM=${N_FGSM:-10000}
N_NOISE=${N_NOISE:-10000}
N_SWEEP=${N_SWEEP:-2000}
N_PAPER=${N_PAPER:-1000}
N_AA=${N_AA:-1000}
AA_VERSION=${AA_VERSION:-standard}
AA_STEPS=${AA_STEPS:-10}  # iterations of APGD-CE and APGD-T when AA_VERSION=custom
OUT=${OUT:-results}
STAGES=${STAGES:-fgsm noise sweep paper aa}
for stage in $STAGES; do
  case $stage in
    fgsm)  $R attack --model "$MODELS" --attack fgsm --eps 8/255 --n "$N_FGSM" --out "$OUT" ;;
    noise) $R attack --model "$MODELS" --suite noise --eps 0,0.05,0.1,0.2,0.3 --n "$N_NOISE" --out "$OUT" ;;
    sweep) $R attack --model "$MODELS" --suite pgd-sweep --eps 0,2/255,4/255,8/255,16/255,32/255,64/255 \
             --n "$N_SWEEP" --out "$OUT" ;;
    paper) $R attack --model "$MODELS" --suite paper --n "$N_PAPER" --out "$OUT" ;;
    aa)    if [ "$AA_VERSION" = custom ]; then steps="--steps $AA_STEPS"; else steps=""; fi
           $R attack --model "$MODELS" --attack autoattack --aa-version "$AA_VERSION" $steps --eps 8/255 \
             --n "$N_AA" --out "$OUT" ;;
    *) echo "unknown stage $stage (fgsm noise sweep paper aa)"; exit 2 ;;
  esac
done
[ -n "$NO_REPORT" ] || $R report --results "$OUT" --out "$OUT/report"
