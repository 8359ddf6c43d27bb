#!/usr/bin/env bash
# Issue 41's identity rules on real MNIST, from the checkout root: bash results/data_and_machine_identity_mnist/commands.sh
# Runs and data copies go to ../runs/data_identity (outside the repository); the transcript is this folder's README.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=../runs/data_identity
rm -rf "$OUT"; mkdir -p "$OUT"
SHARED=${DATA_ROOT:-../shared/data}
RUN=(run.py -m optimizer=thermolion,adamw seed=0 protocol=paper dataset=mnist trainer.epochs=2 trainer.progress=off
     "results_dir=$OUT/results" "data.cache_dir=$OUT/cache" hydra.callbacks.sweep_summary.report=false)
show() { echo; echo "\$ $*"; "$@" 2>&1 | sed "s#$(pwd)/##g"; }

# 1. trained once, with 2 threads, on the shared MNIST files
show env OMP_NUM_THREADS=2 $PY "${RUN[@]}" data.root=$SHARED
# 2. the same bytes under another root: data.root says where, not what
mkdir -p "$OUT/copy" && cp -rp "$SHARED/MNIST" "$OUT/copy/"
show env OMP_NUM_THREADS=2 $PY "${RUN[@]}" data.root=$OUT/copy
# 3. other files copied over the old names with their times kept (cp -p): FashionMNIST's, same format and size
for f in train-images-idx3-ubyte train-labels-idx1-ubyte; do
  touch -r "$OUT/copy/MNIST/raw/$f" "$OUT/stamp"; cp -p "$SHARED/FashionMNIST/raw/$f" "$OUT/copy/MNIST/raw/$f"
  touch -r "$OUT/stamp" "$OUT/copy/MNIST/raw/$f"
done
show ls -l --time-style=+%F.%T "$SHARED/MNIST/raw/train-images-idx3-ubyte" "$OUT/copy/MNIST/raw/train-images-idx3-ubyte"
show env OMP_NUM_THREADS=2 $PY "${RUN[@]}" data.root=$OUT/copy
# 4. another thread count on the original data: shown, not stale; stale only under exact_machine=true
show env OMP_NUM_THREADS=1 $PY "${RUN[@]}" data.root=$SHARED
show env OMP_NUM_THREADS=1 $PY "${RUN[@]}" data.root=$SHARED exact_machine=true
show env OMP_NUM_THREADS=1 $PY -m runners.status "$OUT/results"
