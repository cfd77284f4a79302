#!/bin/bash
# The run prepared in session 14 (brought to version 5 in session 16) on the borrowed GPU (docs/flux2-mini.md, "What more compute buys"); run from the
# repository root with the inputs in $GPU (default .gpu): data.safetensors.gz (export_data.mjs),
# te_v5.safetensors and te_init.safetensors (flux2_mini_torch.py reduce-te of version 5's and the
# seeded initial text encoder) and init_tr/ (the seeded initial transformer, bf16). Results go to $OUT.
#
# Six runs at once on one GPU, all from the same initial weights and data as flux2 train's stages:
#   A  version 5's text encoder, transformer stage as the recipe (3,500 steps × 16)   = 1× (control:
#      the shipped version 5, since the VAE is models/flux2-mini's)
#   B  version 5's text encoder, transformer 35,000 × 16                             = 10×
#   C  version 5's text encoder, transformer 35,000 × 64                             = 40×
#   D  one text-encoder stage (3,000 × 32, version 3-4's), then transformer 1×      (control)
#   E  text-encoder stage 30,000 × 32 (10×), then transformer 10×
#   F  E's text encoder, transformer 1×
# A run whose steps do not fit its time budget trains fewer (the cosine schedule stretched to
# them) and says so; the numbers it trained are in each result's metadata.
# Usage: SCALE=0.01 MAX_SAMPLES=64 bash docs/probes/torch-scale/device_run.sh   (a CPU smoke test)
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
P=docs/probes/torch-scale/flux2_mini_torch.py
G=${GPU:-.gpu}
OUT=${OUT:?set OUT to the results folder}
S=${SCALE:-1}
steps() { python3 -c "print(max(1, round($1 * $S)))"; }
LOG=$OUT/log.txt
python3 $P check testdata/golden testdata/golden-train > $OUT/check.txt 2>&1
grep -v "^  ok " $OUT/check.txt
grep -q "^all match" $OUT/check.txt || { echo "the golden check failed: not training"; exit 1; }
common="--vae models/flux2-mini/vae --init $G/init_tr --data $G/data.safetensors.gz --seed 0 --max-samples ${MAX_SAMPLES:-0}"
train() { python3 $P train $common "$@" >> $LOG 2>&1 || echo "run $* failed" >> $LOG; }
train --name A --te $G/te_v5.safetensors --steps $(steps 3500) --batch-size 16 --out $OUT/A.safetensors &
train --name B --te $G/te_v5.safetensors --steps $(steps 35000) --batch-size 16 --time-budget 330 --out $OUT/B.safetensors &
train --name C --te $G/te_v5.safetensors --steps $(steps 35000) --batch-size 64 --time-budget 330 --out $OUT/C.safetensors &
train --name D --te $G/te_init.safetensors --te-steps $(steps 3000) --steps $(steps 3500) --batch-size 16 --out $OUT/D.safetensors &
(
  train --name E0 --te $G/te_init.safetensors --te-steps $(steps 30000) --te-budget 150 --steps 0 --out /tmp/te10.safetensors
  train --name E --te /tmp/te10.safetensors --steps $(steps 35000) --batch-size 16 --time-budget 220 --out $OUT/E.safetensors &
  train --name F --te /tmp/te10.safetensors --steps $(steps 3500) --batch-size 16 --out $OUT/F.safetensors &
  wait
) &
while sleep 30; do jobs -r | grep -q . || break; tail -n 1 $LOG; done
wait
cat $LOG
ls -la $OUT
