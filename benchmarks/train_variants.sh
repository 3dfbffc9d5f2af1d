#!/usr/bin/env bash
# Reproduces the shipped demo model (models/weights/demo-fcn8s.safetensors) and README's
# FCN-32s / FCN-16s / FCN-8s table: the three trained the same way on one synthetic scene,
# validated on a second, scored on three scenes of seeds none of them saw. Fully labelled scenes:
# chips anywhere, every pixel weighed alike (the trainer's defaults are for sparse labels).
#   bash benchmarks/train_variants.sh            # OUT=bench-out STEPS=1500 ARCHS="fcn32s fcn16s fcn8s"
set -euo pipefail
OUT=${OUT:-bench-out}
STEPS=${STEPS:-1500}
ARCHS=${ARCHS:-"fcn32s fcn16s fcn8s"}
TEST_SEEDS=${TEST_SEEDS:-"11 12 13"}
FCNSEG=${FCNSEG:-.venv/bin/fcnseg}

[ -f "$OUT/train/image.tif" ] || $FCNSEG synth "$OUT/train" --size 3072 --seed 1
[ -f "$OUT/val/image.tif" ] || $FCNSEG synth "$OUT/val" --size 1024 --seed 2
for s in $TEST_SEEDS; do
    [ -f "$OUT/test-$s/image.tif" ] || $FCNSEG synth "$OUT/test-$s" --size 1024 --seed "$s"
done

for arch in $ARCHS; do
    $FCNSEG train --image "$OUT/train/image.tif" --labels "$OUT/train/labels.tif" \
        --val-image "$OUT/val/image.tif" --val-labels "$OUT/val/labels.tif" \
        --arch "$arch" --width 0.125 --steps "$STEPS" --chip 256 --batch-size 8 --lr 1e-3 --seed 0 \
        --sampling uniform --class-weights none \
        --augment-gain 0 --augment-offset 0 --augment-gamma 0 --augment-noise 0 --augment-blur 0 \
        --out "$OUT/$arch.safetensors"
    for s in $TEST_SEEDS; do
        $FCNSEG evaluate --model "$OUT/$arch.safetensors" --image "$OUT/test-$s/image.tif" \
            --labels "$OUT/test-$s/labels.tif" --json > "$OUT/$arch-test-$s.json"
    done
done
.venv/bin/python benchmarks/variants_table.py "$OUT" $ARCHS
