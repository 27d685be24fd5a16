#!/usr/bin/env bash
# Fine-tuning against a distribution shift, on a CPU, end to end (issue #24): the demo
# CLIP, fine-tuned on filled shapes (the training style) with cross-entropy and with FLYP,
# scored on filled shapes and on two styles it never saw (outlines; outlines on a light
# background), and the WiSE-FT curve of each.
#
#   bash bench/finetune_shift_demo.sh [OUT_DIR]     # default /tmp/finetune_shift
#
# Steps: train the demo model (configs/demo.py, skipped when OUT/demo holds it); score it
# zero-shot (eval.py --task robustness); fine-tune it both ways (configs/finetune.py, 300
# steps of 128 on 5,000 filled training images, lr 1e-4); score each with the zero-shot
# model as baseline; sweep WiSE-FT's alpha from 0 to 1 for each.  Results: OUT/*.json,
# OUT/wise_*.png, and the tables printed.
set -euo pipefail
OUT=${1:-/tmp/finetune_shift}
mkdir -p "$OUT"
export XLA_FLAGS=${XLA_FLAGS:-}
ID='demo:val'
OUTLINE='demo:val?style=outline'
SKETCH='demo:val?style=sketch'
TEMPLATES='{}'  # the demo's class names are whole prompts ("a red circle")
if [ ! -d "$OUT/demo/checkpoints" ]; then
  python train.py --config configs/demo.py --workdir "$OUT/demo"
fi
python eval.py --checkpoint "$OUT/demo" --task robustness --data "$ID" --shift "$OUTLINE" --shift "$SKETCH" \
  --templates "$TEMPLATES" --output "$OUT/zeroshot.json"
for loss in ce flyp; do
  if [ ! -d "$OUT/$loss/checkpoints" ]; then
    python train.py --config "configs/finetune.py:demo:train?n=5000,$loss" --workdir "$OUT/$loss" \
      --config.model=tiny-vit --config.init_from="$OUT/demo" --config.compute_dtype=float32 \
      --config.finetune.templates="$TEMPLATES" --config.batch_size=128 --config.epochs=0 \
      --config.total_steps=300 --config.optim.lr=1e-4 --config.optim.warmup_steps=30 \
      --config.checkpoint_every=300 --config.log_every=50
  fi
  python eval.py --checkpoint "$OUT/$loss" --task robustness --data "$ID" --shift "$OUTLINE" --shift "$SKETCH" \
    --templates "$TEMPLATES" --baseline "$OUT/demo" --output "$OUT/$loss.json"
  python -m clip_jax.wise_ft --zeroshot "$OUT/demo" --finetuned "$OUT/$loss" --alphas 0:1:0.1 \
    --data "$ID" --shift "$OUTLINE" --shift "$SKETCH" --templates "$TEMPLATES" --output "$OUT/wise_$loss.json" --plot "$OUT/wise_$loss.png"
done
