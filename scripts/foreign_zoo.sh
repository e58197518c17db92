#!/bin/sh
# The foreign zoo entries, rebuilt from scratch: three small networks written in SpikingJelly and snnTorch with other
# neurons and surrogates than robench's own, trained by examples/train_foreign.py with Gaussian noise (sigma 8/255,
# the zoo's gaussian recipe) for one epoch on one CPU thread (~5-10 min each), then imported with `robench zoo import`
# (which runs their code: the opt-in is set here). A weights file or zoo entry that already exists is kept, so the
# script resumes. Usage: scripts/foreign_zoo.sh [ID...]   (ROBENCH=... picks the command, PY=... the Python)
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 ROBENCH_THREADS=1 ROBENCH_TRUST_CODE=1
PY="${PY:-.venv/bin/python}"
R="${ROBENCH:-.venv/bin/robench}"
IDS="${*:-fmnist-sjnet-lif-sigmoid fmnist-sjnet-plif-atan fmnist-snntorch-leaky-fastsig}"
for id in $IDS; do
  case "$id" in
    fmnist-sjnet-lif-sigmoid)  net=sj; kw='{"neuron": "lif", "surrogate": "sigmoid", "alpha": 4.0}'
      imp="--framework spikingjelly --entry examples.sj_nets:build" ;;
    fmnist-sjnet-plif-atan)    net=sj; kw='{"neuron": "plif", "surrogate": "atan", "alpha": 2.0}'
      imp="--framework spikingjelly --entry examples.sj_nets:build" ;;
    fmnist-snntorch-leaky-fastsig) net=snntorch; kw='{}'
      imp="--framework snntorch --entry examples.snntorch_tutorial:build --step-mode single --output 1" ;;
    *) echo "Error: unknown foreign entry $id" >&2; exit 2 ;;
  esac
  w="runs/$id.pt"
  [ -f "$w" ] || $PY examples/train_foreign.py --net "$net" --kwargs "$kw" --sigma 8/255 --out "$w" || { rc=1; continue; }
  [ -f "zoo/$id.json" ] || $R zoo import "$w" --id "$id" --trust-code $imp --kwargs "$kw" --code-path . -T 4 \
    --dataset fashion-mnist --n 10000 || rc=1
done
exit "${rc:-0}"
