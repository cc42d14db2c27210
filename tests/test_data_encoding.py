"""model_input: batch-first frames -> time-first, static kept or repeated (direct encoding)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexsnn.data import model_input
from flexsnn.errors import InputError


def test_static_repeat_without_copy():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    out = model_input(x, "static", t=5)
    assert out.shape == (5, 2, 3, 4) and out.dtype == x.dtype
    for t in range(5):
        assert torch.equal(out[t], x)
    assert out.data_ptr() == x.data_ptr() and out.stride(0) == 0  # expanded view
    assert model_input(x, "static", t=1).shape == (1, 2, 3, 4)
    assert model_input(x, "static") is x  # a StagedNet repeats static input itself


def test_static_repeat_keeps_gradient_path():
    x = torch.ones(2, 3, requires_grad=True)
    model_input(x, "static", t=4).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 3), 4.0))  # each step contributes once


@pytest.mark.parametrize("t", [0, -1, 2.0, True])
def test_static_bad_t(t):
    with pytest.raises(InputError, match="t must be a positive integer"):
        model_input(torch.zeros(2, 3), "static", t=t)


def test_static_bad_x():
    with pytest.raises(InputError, match=r"x must be a torch.Tensor shaped \[B, ...\]"):
        model_input([[1.0]], "static", t=2)
    with pytest.raises(InputError, match="batch dimension"):
        model_input(torch.tensor(1.0), "static", t=2)


def test_frames_to_time_first():
    x = torch.randn(3, 5, 2, 4, 4)  # [B, T, P, H, W]
    out = model_input(x, "frames")
    assert out.shape == (5, 3, 2, 4, 4)
    assert torch.equal(out[4, 2], x[2, 4])
    with pytest.raises(InputError, match=r"\[B, T, ...\]"):
        model_input(torch.zeros(3))
    with pytest.raises(InputError, match="T = 0"):
        model_input(torch.zeros(3, 0, 2))
    with pytest.raises(InputError, match="torch.Tensor"):
        model_input([[1.0]])
    with pytest.raises(InputError, match="t applies to static input"):
        model_input(x, "frames", t=3)


def test_kind_from_the_model():
    x = torch.randn(3, 5, 2)
    frames_model = nn.Identity()
    frames_model.input_kind = "frames"
    assert model_input(x, frames_model).shape == (5, 3, 2)
    assert model_input(x, nn.Identity()) is x  # no input_kind: static
    with pytest.raises(InputError, match="kind must be one of 'frames', 'static'"):
        model_input(x, "images")
