#!/bin/bash
cd /work/runs/s28
while pgrep -f deep4.sh > /dev/null; do sleep 15; done
export PYTHONPATH=/work/wt-s28/src TORCHINDUCTOR_CACHE_DIR=/tmp/ind-s28
python bank.py 1024 /work/runs/s28/bank1024.pt 7 > bank.log 2>&1
echo "$(date +%T) bank rc=$?" >> chain.log
export BVQ_BANK=/work/runs/s28/bank1024.pt BVQ_BANK_BATCH=8
/usr/bin/time -v python -m brainvq.cli sharpen --data /work/data/oasis1 --vqvae /work/runs/s25/qcpu/vqvae/vqvae.safetensors \
    --out /work/runs/s28/drawn8 --epochs 4 --seed 0 --max-minutes 26 --precision 32-true --no-progress > drawn8.log 2>&1
echo "$(date +%T) drawn8 rc=$?" >> chain.log
unset BVQ_BANK
A=/work/runs/s25/qcpu
for s in 2 3; do
python evaldec.py $s drawn8=$A/vqvae,$A/prior/prior.safetensors,/work/runs/s28/drawn8/vqvae.safetensors > eval2_s$s.json 2> eval2_s$s.err
echo "$(date +%T) eval2 $s rc=$?" >> chain.log
done
