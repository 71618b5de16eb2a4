#!/bin/bash
cd /work/runs/s28
export PYTHONPATH=/work/wt-s28/src TORCHINDUCTOR_CACHE_DIR=/tmp/ind-s28
export BVQ_EXTRA=4 BVQ_EXTRA_NECK=2
/usr/bin/time -v python -m brainvq.cli sharpen --data /work/data/oasis1 --vqvae /work/runs/s25/qcpu/vqvae/vqvae.safetensors \
    --out /work/runs/s28/deep4 --epochs 4 --seed 0 --max-minutes 26 --precision 32-true --no-progress > deep4.log 2>&1
echo "$(date +%T) deep4 rc=$?" >> chain.log
unset BVQ_EXTRA
A=/work/runs/s25/qcpu
for s in 2 3; do
python evaldec.py $s deep4=$A/vqvae,$A/prior/prior.safetensors,/work/runs/s28/deep4/vqvae.safetensors > eval1_s$s.json 2> eval1_s$s.err
echo "$(date +%T) eval1 $s rc=$?" >> chain.log
done
