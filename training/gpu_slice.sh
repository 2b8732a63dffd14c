#!/usr/bin/env bash
# One GPU training slice of the default codec, for the device tool's machine (docs/TRAINING.md).
#
# Run from the repository root there, carrying the wheels and the subset:
#   run(command="bash training/gpu_slice.sh", carry=[".whl", "training/subset"], timeout_s=600)
# Needs: .whl/ (soundfile, cffi, pycparser, soxr wheels for CPython 3.12; the machine has torch,
# numpy, click, safetensors), training/subset/ (audiotok make-subset), training/state.safetensors
# (absent on the first slice: training starts from scratch).
#
# Trains each variant below as its own process on the one GPU, side by side (the codec is small
# and its steps launch-bound, so the GPU has room for several), for MINUTES of wall time, then
# writes each variant's compact state and history line under $OUT:
#   $OUT/NAME.safetensors   compact state of variant NAME (seven at most: the device tool
#                           brings 8 files back)
#   $OUT/logs.tar.gz        each run's log.jsonl and history.jsonl, stderr, nvidia-smi samples
# Back here: pick the variant to continue, copy its state to training/state.safetensors and
# append its history line to training/history.jsonl (the others' lines too, as ablations;
# export follows the chain of slices, so they don't count towards the model's history).
set -uo pipefail
MINUTES=${MINUTES:-7.5}
OUT=${OUT:-/tmp/gpu_slice_out}
mkdir -p "$OUT" /tmp/slice
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, soundfile; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# name | overrides of configs/audiotok_24khz.json. The first continues the shipped recipe; the
# others are ablations from the same state, scratch-* from nothing (docs/TRAINING.md says which
# and why). The processes share the GPU (no faster together than one alone), so each gets its
# share of MINUTES.
VARIANTS=${VARIANTS:-"default|
adv|--set losses.adversarial=4 --set losses.feature_matching=4
lr-high|--set optim.lr=0.0003
qdrop|--set codebooks.dropout=0.5
scratch-elu|--set optim.lr=0.0003
scratch-snake|--set model.activation=Snake --set optim.lr=0.0003
scratch-fact|--set model.codebook_dim=8 --set losses.commitment=0.25 --set optim.lr=0.0003"}

(command -v nvidia-smi >/dev/null && nvidia-smi dmon -s u -d 5 > /tmp/slice/dmon.txt 2>&1) &
dmon=$!
pids=()
while IFS='|' read -r name overrides; do
  [ -n "$name" ] || continue
  mkdir -p "/tmp/slice/$name"
  # A variant named scratch-* starts from nothing (an architecture change can't resume).
  if [ -f training/state.safetensors ] && [[ $name != scratch* ]]; then
    cp training/state.safetensors "/tmp/slice/$name/"
  fi
  # shellcheck disable=SC2086  # the overrides are separate words
  python3 -m audiotok train configs/audiotok_24khz.json -o "/tmp/slice/$name/run" \
    --state "/tmp/slice/$name" --device "${DEVICE:-cuda}" --minutes "$MINUTES" --threads 2 \
    --note "gpu slice, variant $name" $overrides > "/tmp/slice/$name/stderr.txt" 2>&1 &
  pids+=($!)
done <<< "$VARIANTS"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
kill "$dmon" 2>/dev/null
for dir in /tmp/slice/*/; do
  name=$(basename "$dir")
  [ -f "$dir/state.safetensors" ] && cp "$dir/state.safetensors" "$OUT/$name.safetensors"
  tail -n 3 "$dir/stderr.txt"
done
tar -czf "$OUT/logs.tar.gz" -C /tmp/slice --exclude='*.safetensors' .
exit $status
