"""A run's plan checks a checkpoint without torch (issue 24): ``card_file.read_card_file`` with
``finite`` hashes every byte and finds NaN and infinities in the raw values, so it must refuse
exactly what loading (``checkpoint.non_finite_tensor``) refuses, in every float dtype a file may
hold, and report the same counts the STAC item gives (``mlm:total_parameters``)."""

from __future__ import annotations

import pytest
import torch
from test_model_limits import card_for, forge, weights  # noqa: F401  (weights: the fixture)

from fcnseg.errors import CheckpointError
from fcnseg.models.card_file import read_card_file
from fcnseg.models.checkpoint import non_finite_tensor
from fcnseg.pipeline.products.stac_model import total_parameters

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), None])
def test_the_header_scan_refuses_what_loading_refuses(weights, tmp_path, dtype, value):  # noqa: F811
    tensors = {k: v.to(dtype, copy=True) if v.is_floating_point() else v.clone() for k, v in weights.items()}
    if value is not None:
        tensors["score_fr.weight"].view(-1)[-1] = value  # the last value: the end of the tensor's bytes
    path = forge(tmp_path / "m.safetensors", tensors, card_for().to_json())
    expected = non_finite_tensor(tensors)
    assert expected == (None if value is None else "score_fr.weight")
    if expected is None:
        checked = read_card_file(path, finite=True)
        assert checked.verified is True
        assert checked.parameters == sum(t.numel() for t in tensors.values()) == total_parameters(str(path))
    else:
        with pytest.raises(CheckpointError, match=rf"m\.safetensors: tensor {expected} holds NaN or infinite"):
            read_card_file(path, finite=True)
        assert read_card_file(path).verified is True  # without ``finite`` (fcnseg info) the card is read
