"""The layers of the code, checked without running it (``docs/design.md``, ``fcnseg/errors.py``)."""

from __future__ import annotations

import subprocess
import sys


def test_the_model_card_imports_no_torch():
    """The products and ``fcnseg query`` describe outputs by the card: importing it must stay light."""
    code = "import fcnseg.models.card, sys; assert not {'torch', 'safetensors'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)
