#!/bin/bash
cd /work/runs/s28
while pgrep -f drawn.sh > /dev/null; do sleep 10; done
export PYTHONPATH=/work/wt-s28/src TORCHINDUCTOR_CACHE_DIR=/tmp/ind-s28
BVQ_CONTINUOUS=1 /usr/bin/time -v python -m brainvq.cli sharpen --data /work/data/oasis1 --vqvae /work/runs/s25/qcpu/vqvae/vqvae.safetensors \
    --out /work/runs/s28/cont --epochs 4 --seed 0 --max-minutes 26 --precision 32-true --no-progress > cont.log 2>&1
echo "$(date +%T) cont rc=$?" >> chain.log
A=/work/runs/s25/qcpu
for s in 2 3; do
python evalcont.py $s mse_cont=$A/vqvae/vqvae.safetensors:cont gdef_codes=$A/generation_decoder/vqvae.safetensors:codes gdef_cont=$A/generation_decoder/vqvae.safetensors:cont gcont_cont=/work/runs/s28/cont/vqvae.safetensors:cont gcont_codes=/work/runs/s28/cont/vqvae.safetensors:codes > evalc_s$s.json 2> evalc_s$s.err
echo "$(date +%T) evalc $s rc=$?" >> chain.log
done
