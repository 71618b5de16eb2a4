#!/bin/bash
cd /work/runs/s28
while pgrep -f suite.sh > /dev/null; do sleep 5; done
export PYTHONPATH=/work/wt-s28/src TORCHINDUCTOR_CACHE_DIR=/tmp/ind-s28
/usr/bin/time -v python -m brainvq.cli train-vqvae --data /work/data/oasis1 --out /work/runs/s28/wide/vqvae --stem-channels 32 --hidden-channels 64 \
    --epochs 20 --seed 0 --max-minutes 18 --precision 32-true --no-progress > wide_vqvae.log 2>&1
echo "$(date +%T) wide vqvae rc=$?" >> chain.log
/usr/bin/time -v python -m brainvq.cli sharpen --data /work/data/oasis1 --vqvae /work/runs/s28/wide/vqvae/vqvae.safetensors \
    --out /work/runs/s28/wide/generation_decoder --epochs 4 --seed 0 --max-minutes 22 --precision 32-true --no-progress > wide_sharpen.log 2>&1
echo "$(date +%T) wide sharpen rc=$?" >> chain.log
for s in 2 3; do
python evalcont.py $s wide_mse=/work/runs/s28/wide/vqvae/vqvae.safetensors:codes wide_gen=/work/runs/s28/wide/generation_decoder/vqvae.safetensors:codes > evalw_s$s.json 2> evalw_s$s.err
echo "$(date +%T) evalw $s rc=$?" >> chain.log
done
