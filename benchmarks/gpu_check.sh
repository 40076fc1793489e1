#!/usr/bin/env bash
# The GPU measurements of the README (Performance; ImageNet GPU hours), in one short run for a lent GPU machine:
# the trainer's step against a bare PyTorch loop on ConvMixer-768/32 at 224 px (bf16, channels-last, synthetic batches
# in memory, batch 64: the paper's per-GPU batch), the census against that epoch, then the demo recipe on the GPU with
# DoG init and with DoGConv2d (bf16). About 90 s on one H100 once started.
#   bash benchmarks/gpu_check.sh [OUT_DIR]     (default docs/gpu; needs torch, timm, accelerate, tensorboard)
set -o pipefail
OUT=${1:-${OUT:-docs/gpu}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
clean() { tr '\r' '\n' | grep -v 'it/s\]\|s/it\]\|it/s, \|s/it, '; }   # drop progress-bar frames
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, 'timm', timm.__version__,
'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout 240 python3 benchmarks/trainer.py --model convmixer_768_32 --kwargs '{"patch_size": 14}' --img 224 --batch 64 \
  --precision bf16 --channels-last --epoch-images 1281167 2>&1 | clean | tee "$OUT/trainer_gpu.txt"
for arm in dog dogconv; do
  extra=""; [ $arm = dogconv ] && extra="--init.parameterise dog"
  timeout 120 python3 -m train --config recipes/demo.yaml --output-dir "/tmp/demo_$arm" --train.precision bf16 \
    --model.channels_last true $extra 2>&1 | clean | tail -8 | tee "$OUT/demo_$arm.txt"
  cp "/tmp/demo_$arm/metrics.jsonl" "$OUT/demo_${arm}_metrics.jsonl"
done
