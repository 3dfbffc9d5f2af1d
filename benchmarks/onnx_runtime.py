"""ONNX Runtime against torch on the CPU, in the same run: megapixels per second of raw pixels to
uint8 labels (normalisation, nodata fill, FCN, argmax: the exported graph's ``labels`` output and
fcnseg's own torch path), on one square window, the demo model and a full-width FCN-8s (random
weights with the demo card: speed does not depend on the weights). Runs alternate, torch first,
each after a warm-up; labels are compared pixel for pixel (near ties aside they are equal).

    .venv/bin/python benchmarks/onnx_runtime.py                       # 1024², 2 threads, both widths
    .venv/bin/python benchmarks/onnx_runtime.py --side 1536 --widths 0.125 --repeats 3
    .venv/bin/python benchmarks/onnx_runtime.py --device cuda         # a GPU machine with onnxruntime-gpu
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.fcn import build_model
from fcnseg.models.inference import execution_of, forward_logits, normalize_on_device, prepare_for_inference
from fcnseg.models.onnx_export import export_onnx
from fcnseg.models.onnx_runtime import OnnxModel

#: onnxruntime's providers by device (the CPU's after CUDA's for any node CUDA's lacks; the row names those used).
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def timed(run: Callable[[], np.ndarray], repeats: int) -> tuple[list[float], np.ndarray]:
    """Seconds of each of ``repeats`` warm runs, and the labels."""
    labels = run()  # warm-up: allocator, kernels, onnxruntime's first-run planning
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return seconds, labels


def compare(width: float, side: int, threads: int, repeats: int, device: str, folder: Path) -> str:
    """One table row: torch's and ONNX Runtime's MP/s on the same input, and the labels that differ."""
    model, card = load_checkpoint(DEMO_MODEL)
    if width != card.width:
        torch.manual_seed(0)
        model = build_model(card.arch, card.bands, card.num_classes, width).eval()
        card.width = width
    path = export_onnx(model, card, folder / f"fcn8s-{width:g}.onnx")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4000, size=(1, card.bands, side, side)).astype(np.uint16)
    valid = np.ones((1, side, side), dtype=bool)
    valid[:, : side // 8] = False  # a nodata band across the top, as a collar would be

    torch_device = torch.device(device)
    net = prepare_for_inference(model, torch_device)
    raw = torch.from_numpy(pixels.astype(np.int32)).to(torch_device)  # int32: a type every backend takes
    mask = torch.from_numpy(valid).to(torch_device)

    @torch.inference_mode()
    def with_torch() -> np.ndarray:
        x = normalize_on_device(raw, mask, card.normalization, card.nodata)
        return forward_logits(net, x).argmax(dim=1).to(torch.uint8).masked_fill_(~mask, 255).cpu().numpy()

    runtime = OnnxModel(path, providers=PROVIDERS[device], threads=threads if device == "cpu" else None)
    torch_seconds, torch_labels = timed(with_torch, repeats)
    onnx_seconds, onnx_labels = timed(lambda: runtime.labels(pixels, valid), repeats)
    torch_more, _ = timed(with_torch, repeats)  # again after ONNX: the machine is shared, load drifts
    onnx_more, _ = timed(lambda: runtime.labels(pixels, valid), repeats)
    megapixels = side * side / 1e6

    def rate(seconds: list[float]) -> str:
        rates = sorted(megapixels / s for s in seconds)
        return f"{rates[0]:.2f}–{rates[-1]:.2f}"

    differ = int((torch_labels != onnx_labels).sum())
    where = f"{execution_of(torch_device)}, {threads} threads" if device == "cpu" else execution_of(torch_device)
    return (f"| {width:g} | {side}² | {where} | {rate(torch_seconds + torch_more)} |"
            f" {rate(onnx_seconds + onnx_more)} | {differ} of {side * side:,} | {' '.join(runtime.providers)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--widths", default="0.125,1.0", help="FCN-8s widths, comma separated (0.125: the demo model)")
    parser.add_argument("--threads", type=int, default=2, help="torch's and onnxruntime's intra-op threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each, twice (after a warm-up)")
    parser.add_argument("--device", default="cpu", choices=sorted(PROVIDERS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| width | input | torch runs as | torch MP/s | ONNX Runtime MP/s | labels that differ | providers |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for width in (float(w) for w in args.widths.split(",")):
            print(compare(width, args.side, args.threads, args.repeats, args.device, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
