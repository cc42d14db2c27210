"""flexsnn.multistep: time-first execution; the pooled AvgPool2d of the training path."""

import pytest
import torch
from torch import nn

from flexsnn.buffers import BufferPool
from flexsnn.multistep import PooledAvgPool2d, apply_flat

POOLS = [
    nn.AvgPool2d(2),
    nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(2, divisor_override=3),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pool", POOLS, ids=["k2", "k3s2p1ceil", "divisor"])
def test_pooled_avg_pool_equals_the_module_values_layout_and_gradient(pool, channels_last, monkeypatch):
    monkeypatch.setattr("flexsnn.multistep.STEP_BUFFERS", BufferPool())
    x = torch.rand(4, 8, 16, 34, 34)  # [T, B, C, H, W]: 4.7 MiB, pooled
    if channels_last:
        x = x.reshape(32, 16, 34, 34).contiguous(memory_format=torch.channels_last).reshape(x.shape)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = apply_flat(pool, a)
    yb = pool(b.reshape(32, 16, 34, 34)).reshape(4, 8, *ya.shape[2:])
    assert ya.grad_fn.next_functions[0][0].name().endswith("PooledAvgPool2dBackward")
    g = torch.rand_like(yb)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    assert torch.equal(ya, yb) and ya.stride() == yb.stride()
    assert torch.equal(a.grad, b.grad) and a.grad.stride() == b.grad.stride()


def test_pooled_avg_pool_results_of_two_steps_do_not_alias(monkeypatch):
    pool = BufferPool()
    monkeypatch.setattr("flexsnn.multistep.STEP_BUFFERS", pool)
    avg = nn.AvgPool2d(2)
    x = torch.rand(4, 8, 16, 34, 34, requires_grad=True)
    first = apply_flat(avg, x)
    kept = first.detach().clone()
    first.sum().backward()
    grad1 = x.grad
    x.grad = None
    second = apply_flat(avg, x * 2)  # the first output and gradient are still held
    (second * 3).sum().backward()
    assert first.data_ptr() != second.data_ptr() and grad1.data_ptr() != x.grad.data_ptr()
    assert torch.equal(first, kept) and torch.equal(grad1, torch.full_like(grad1, 0.25))
    assert torch.equal(x.grad, torch.full_like(grad1, 1.5))  # 3 * 2 * 1/4
    del first, second, grad1
    x.grad = None
    before = pool.pooled_bytes()
    apply_flat(avg, x).sum().backward()  # now their blocks are free: no new memory
    assert pool.pooled_bytes() == before


def test_plain_module_runs_without_grad_with_hooks_and_on_other_shapes():
    avg = nn.AvgPool2d(2)
    x = torch.rand(2, 3, 4, 8, 8)
    with torch.no_grad():
        assert "Pooled" not in type(apply_flat(avg, x).grad_fn).__name__
    seen = []
    handle = avg.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    y = apply_flat(avg, x.requires_grad_())
    handle.remove()
    assert seen == [torch.Size([6, 4, 8, 8])]  # a hook sees the module's own call
    assert "Pooled" not in y.grad_fn.next_functions[0][0].name()
    y3 = apply_flat(avg, torch.rand(2, 3, 8, 8, requires_grad=True))  # [T, B, L, L]: 3-D pool input
    assert y3.shape == (2, 3, 4, 4)
    assert isinstance(PooledAvgPool2d, type)
