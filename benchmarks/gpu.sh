#!/usr/bin/env bash
# The GPU checklist in one command, for a session that is lent a GPU machine:
#   bash benchmarks/gpu.sh            # from the repository root; makes .venv if missing
# Prints every figure with the device named: the CUDA-path tests, bench-model for the demo model
# and for full-width FCN-8s (bf16 where native), bench-pipeline, training steps against chip reads,
# and one segment run with all outputs.
set -euo pipefail
OUT=${OUT:-gpu-out}
FCNSEG=${FCNSEG:-.venv/bin/fcnseg}
[ -x "$FCNSEG" ] || make venv
mkdir -p "$OUT"

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"

echo "== tests that run the CUDA paths on this machine (device choice, precision, engine, segment)"
.venv/bin/python -m pytest -q tests/test_engine.py tests/test_segment.py tests/test_run_guarantees.py -x

echo "== bench-model: the shipped demo model (width 0.125), read window 1536 and 2560"
for t in 1536 2560; do $FCNSEG bench-model --tile "$t" --batch-size 4 --device cuda; done

echo "== bench-model: full-width FCN-8s (134 M parameters), bf16 autocast where native"
[ -f "$OUT/fcn8s-full.safetensors" ] || $FCNSEG init-model "$OUT/fcn8s-full.safetensors" --arch fcn8s --bands 4 \
    --classes 6 --width 1.0
for b in 1 4; do $FCNSEG bench-model --model "$OUT/fcn8s-full.safetensors" --tile 2560 --batch-size "$b" --device cuda; done
echo "== the same in channels-last memory format (the pipeline adopts it only if this is faster)"
$FCNSEG bench-model --model "$OUT/fcn8s-full.safetensors" --tile 2560 --batch-size 4 --device cuda --channels-last

echo "== bench-pipeline (4096² scene, tile 1024 and 2048)"
$FCNSEG bench-pipeline --size 4096 --tile 1024 --batch-size 4 --device cuda --workers 1
$FCNSEG bench-pipeline --size 4096 --tile 2048 --batch-size 2 --device cuda --workers 1
$FCNSEG bench-pipeline --model "$OUT/fcn8s-full.safetensors" --size 4096 --tile 1024 --batch-size 4 --device cuda --workers 1

echo "== training: chip reads against steps (FCN-8s width 0.125, chip 256, batch 8, vector labels; autocast)"
.venv/bin/python benchmarks/chip_reads.py --device cuda --steps 300 --out "$OUT/reads"

echo "== test-time augmentation (issue 26): its tests; tiled against whole-image d4 labels on the GPU (agreement:"
echo "   exact on the CPU, near ties may differ in bf16); a 4096² segment with --tta none, flip, d4 (the time factor)"
.venv/bin/python -m pytest -q tests/test_tta.py -x
.venv/bin/python -c "import fcnseg, numpy as np, rasterio; from fcnseg.pipeline.synth import write_scene; \
p, _ = write_scene('$OUT/tta-scene', 1024, seed=11, rotate=30, overwrite=True); a = rasterio.open(p).read()[:, :1001, :977]; \
m = fcnseg.load_model('demo', 'cuda'); w = fcnseg.predict_array(m, a, tile=1024, nodata=0, tta='d4'); \
t = fcnseg.predict_array(m, a, tile=256, batch_size=4, nodata=0, tta='d4'); print('cuda d4 tiled = whole:', float((w == t).mean()))"
[ -f "$OUT/tta4k/image.tif" ] || $FCNSEG synth "$OUT/tta4k" --size 4096 --seed 11
for t in none flip d4; do $FCNSEG segment "$OUT/tta4k/image.tif" --out "$OUT/tta-$t" --device cuda --tta "$t" --no-polygons \
    --no-quicklook --no-stac --overwrite --json | .venv/bin/python -c "import json, sys; r = json.load(sys.stdin); \
print('--tta $t', 'seconds', r['seconds'], 'MP/s', r['megapixels_per_second'])"; done

echo "== the exported model (issue 26): ONNX Runtime's CUDA provider against torch, 2048², demo and full width"
if .venv/bin/python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
    .venv/bin/python benchmarks/onnx_runtime.py --device cuda --side 2048 --widths 0.125,1.0
else echo "skipped: onnxruntime-gpu is not installed (it replaces onnxruntime: pip install onnxruntime-gpu, the version of constraints.txt's onnxruntime pin)"; fi

echo "== one full segment run with every output (8192² scene; tile and batch chosen for the device)"
[ -f "$OUT/scene/image.tif" ] || $FCNSEG synth "$OUT/scene" --size 8192 --seed 7
/usr/bin/time -v $FCNSEG segment "$OUT/scene/image.tif" --out "$OUT/segment" --device cuda --overwrite 2> "$OUT/segment.time" || { tail -20 "$OUT/segment.time"; exit 1; }
grep -E "Elapsed|Maximum resident" "$OUT/segment.time"
.venv/bin/python -c "import json; r = json.load(open('$OUT/segment/run.json')); \
print(json.dumps({k: r[k] for k in ('execution', 'parameters', 'chunks', 'seconds', 'megapixels_per_second', 'peak_memory_mb')}))"
