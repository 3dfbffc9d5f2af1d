"""The demo model's forward pass on one CPU thread, contiguous against channels-last memory format
(the measurement behind ``models.inference.CHANNELS_LAST_BY_DEFAULT``); labels must be identical.

    .venv/bin/python benchmarks/forward_speed.py 1536      # window side
"""

import sys
import time

import torch

from fcnseg.models import DEMO_MODEL
from fcnseg.models.inference import forward_logits, load_for_inference

if __name__ == "__main__":
    torch.set_num_threads(1)
    side = int(sys.argv[1])
    x = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    labels = {}
    for channels_last in (False, True, False, True):
        model, _ = load_for_inference(DEMO_MODEL, torch.device("cpu"), channels_last=channels_last)
        with torch.inference_mode():
            labels[channels_last] = forward_logits(model, x).argmax(1)  # warm-up
            started = time.perf_counter()
            for _ in range(2):
                forward_logits(model, x).argmax(1)
            seconds = (time.perf_counter() - started) / 2
        print(f"{side}², channels_last={channels_last}: {side * side / 1e6 / seconds:.2f} MP/s")
    print("identical labels:", torch.equal(labels[False], labels[True]))
