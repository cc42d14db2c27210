"""Direct encoding and batch-first -> time-first frames."""
from __future__ import annotations

import pytest
import torch

from flexsnn.data import direct_encode, frames_to_time_first
from flexsnn.errors import InputError


def test_direct_encode_repeats_without_copy():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    out = direct_encode(x, 5)
    assert out.shape == (5, 2, 3, 4) and out.dtype == x.dtype
    for t in range(5):
        assert torch.equal(out[t], x)
    assert out.data_ptr() == x.data_ptr() and out.stride(0) == 0  # expanded view
    assert direct_encode(x, 1).shape == (1, 2, 3, 4)


def test_direct_encode_keeps_gradient_path():
    x = torch.ones(2, 3, requires_grad=True)
    direct_encode(x, 4).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 3), 4.0))  # each step contributes once


@pytest.mark.parametrize("t", [0, -1, 2.0, True, None])
def test_direct_encode_bad_t(t):
    with pytest.raises(InputError, match="t must be a positive integer"):
        direct_encode(torch.zeros(2, 3), t)


def test_direct_encode_bad_x():
    with pytest.raises(InputError, match=r"x must be a torch.Tensor shaped \[B, ...\]"):
        direct_encode([[1.0]], 2)
    with pytest.raises(InputError, match="batch dimension"):
        direct_encode(torch.tensor(1.0), 2)


def test_frames_to_time_first():
    x = torch.randn(3, 5, 2, 4, 4)  # [B, T, P, H, W]
    out = frames_to_time_first(x)
    assert out.shape == (5, 3, 2, 4, 4)
    assert torch.equal(out[4, 2], x[2, 4])
    with pytest.raises(InputError, match=r"\[B, T, ...\]"):
        frames_to_time_first(torch.zeros(3))
    with pytest.raises(InputError, match="T = 0"):
        frames_to_time_first(torch.zeros(3, 0, 2))
    with pytest.raises(InputError, match="torch.Tensor"):
        frames_to_time_first([[1.0]])
