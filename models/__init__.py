"""FCN models, checkpoints, training and metrics (torch and numpy only; no I/O of rasters)."""

from pathlib import Path

#: The FCN-8s shipped with fcnseg, trained on synthetic scenes (docs/training.md, "The shipped demo model", says how).
DEMO_MODEL = Path(__file__).parent / "weights" / "demo-fcn8s.safetensors"
