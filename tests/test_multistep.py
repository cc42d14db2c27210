"""flexsnn.multistep: time-first execution; the pooled AvgPool2d and Conv2d of the training path."""

import pytest
import torch
from torch import nn

from flexsnn import multistep
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


def test_pooled_avg_pool_takes_an_nchw_gradient_for_a_channels_last_input(monkeypatch):
    # After a flatten the incoming gradient is NCHW; the result must not depend on that.
    monkeypatch.setattr("flexsnn.multistep.STEP_BUFFERS", BufferPool())
    x = torch.rand(32, 16, 17, 17).contiguous(memory_format=torch.channels_last).reshape(4, 8, 16, 17, 17)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = apply_flat(nn.AvgPool2d(2), a)
    yb = nn.AvgPool2d(2)(b.reshape(32, 16, 17, 17))
    g = torch.rand(32, 16, 8, 8)  # contiguous
    ya.backward(g.reshape(ya.shape))
    yb.backward(g)
    assert torch.equal(a.grad, b.grad) and a.grad.stride() == b.grad.stride()


CONVS = {
    "3x3": dict(in_channels=4, out_channels=16, kernel_size=3, padding=1),
    "stride2_nobias": dict(in_channels=4, out_channels=16, kernel_size=3, stride=2, padding=1, bias=False),
    "dilated_groups": dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=2),
    "1x1": dict(in_channels=4, out_channels=16, kernel_size=1),
}


@pytest.fixture
def small_chunks(monkeypatch):
    """A fresh pool and 64 KiB chunks, so small tensors run many chunks (a ragged last one)."""
    pool = BufferPool(min_bytes=1)
    monkeypatch.setattr("flexsnn.multistep.STEP_BUFFERS", pool)
    monkeypatch.setattr("flexsnn.multistep.CONV_CHUNK_BYTES", 64 << 10)
    return pool


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", list(CONVS))
def test_pooled_conv_equals_the_module_values_layout_and_gradients(name, channels_last, small_chunks):
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONVS[name])
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    twin = nn.Conv2d(**CONVS[name])
    twin.load_state_dict(conv.state_dict())
    if channels_last:
        twin = twin.to(memory_format=torch.channels_last)
    x = torch.rand(3, 7, 4, 20, 20)  # [T, B, C, H, W]: 21 samples, 64 KiB chunks of a few samples
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = apply_flat(conv, a)
    yb = twin(b.reshape(21, 4, 20, 20))
    assert ya.grad_fn.next_functions[0][0].name().endswith("PooledConv2dBackward")
    g = torch.randn(yb.shape)
    ya.backward(g.reshape(ya.shape))
    yb.backward(g)
    torch.testing.assert_close(ya.reshape(yb.shape), yb, rtol=1e-5, atol=1e-6)
    assert ya.reshape(yb.shape).stride() == yb.stride()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.weight.grad, twin.weight.grad, rtol=1e-5, atol=1e-5)
    assert conv.weight.grad.stride() == twin.weight.grad.stride()
    if conv.bias is not None:
        torch.testing.assert_close(conv.bias.grad, twin.bias.grad, rtol=1e-5, atol=1e-5)


def test_pooled_conv_computes_only_the_gradients_asked_for(small_chunks):
    conv = nn.Conv2d(4, 16, 3, padding=1)
    conv.weight.requires_grad_(False)
    x = torch.rand(2, 8, 4, 16, 16)
    y = apply_flat(conv, x)  # frames need no gradient: only the bias does
    y.sum().backward()
    assert conv.weight.grad is None
    torch.testing.assert_close(conv.bias.grad, torch.full((16,), 2.0 * 8 * 16 * 16))


def test_pooled_conv_blocks_are_reused_once_free_and_never_while_held(small_chunks):
    pool = small_chunks
    conv = nn.Conv2d(4, 16, 3, padding=1)
    x = torch.rand(2, 8, 4, 16, 16, requires_grad=True)
    first = apply_flat(conv, x)
    kept = first.detach().clone()
    second = apply_flat(conv, x * 2)  # the first output is still held
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, kept)
    (first.sum() + second.sum()).backward()
    del first, second
    x.grad = None
    before = pool.pooled_bytes()
    apply_flat(conv, x).sum().backward()  # every block is free again: no new memory
    assert pool.pooled_bytes() == before


def test_pooled_conv_inference_is_chunked_and_exact(small_chunks):
    conv = nn.Conv2d(4, 16, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(3, 7, 4, 20, 20)
    with torch.no_grad():
        y = apply_flat(conv, x)
        ref = conv(x.reshape(21, 4, 20, 20))
    with torch.inference_mode():
        yi = apply_flat(conv, x)
    assert small_chunks.pooled_bytes() > 0  # the results came from the pool
    torch.testing.assert_close(y.reshape(ref.shape), ref, rtol=1e-5, atol=1e-6)
    assert y.reshape(ref.shape).stride() == ref.stride() and torch.equal(yi, y)


def test_conv_runs_as_the_module_where_pooling_does_not_apply(small_chunks):
    x = torch.rand(2, 3, 4, 24, 24, requires_grad=True)  # 110 KiB of output: two chunks

    def node(conv, inp=x):
        return apply_flat(conv, inp).grad_fn.next_functions[0][0].name()

    assert "Pooled" in node(nn.Conv2d(4, 8, 3, padding=1))
    assert "Pooled" not in node(nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"))
    assert "Pooled" not in node(nn.Conv2d(4, 8, 3, padding="same"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "Pooled" not in node(nn.Conv2d(4, 8, 3, padding=1))
    hooked = nn.Conv2d(4, 8, 3, padding=1)
    seen = []
    hooked.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    assert "Pooled" not in node(hooked) and seen == [torch.Size([6, 4, 24, 24])]


def test_small_conv_outputs_are_not_chunked(monkeypatch):
    monkeypatch.setattr("flexsnn.multistep.STEP_BUFFERS", BufferPool())
    y = apply_flat(nn.Conv2d(4, 8, 3, padding=1), torch.rand(2, 3, 4, 12, 12, requires_grad=True))
    assert "Pooled" not in y.grad_fn.next_functions[0][0].name()  # 36 KiB: one chunk
    assert multistep.CONV_CHUNK_BYTES == 2 << 20


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_output_size_formula_matches_torch(name):
    conv = nn.Conv2d(**CONVS[name])
    for h, w in [(20, 20), (7, 12), (1, 5)]:
        x = torch.empty(3, 4, h, w)
        args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        try:
            expected = conv(x).numel() * 4
        except RuntimeError:  # too small for the kernel: torch refuses, the formula says 0 or less
            expected = 0
        assert multistep._conv_output_bytes(x, conv.weight, args) == expected


def test_nchw_input_into_a_channels_last_conv_is_converted_once_with_the_same_values(small_chunks):
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(2, 6, 2, 16, 16)  # an NCHW network input
    copies = []
    real = torch.Tensor.copy_

    def counting_copy(dst, src, *a, **k):
        copies.append((tuple(src.shape), dst.is_contiguous(memory_format=torch.channels_last)))
        return real(dst, src, *a, **k)

    y = apply_flat(conv, x)
    with torch.no_grad():
        want = conv(x.reshape(12, 2, 16, 16))
    assert torch.equal(y.reshape(want.shape), want)
    conv.zero_grad()
    torch.Tensor.copy_ = counting_copy
    try:
        ya = apply_flat(conv, x)
    finally:
        torch.Tensor.copy_ = real
    assert copies[0] == ((12, 2, 16, 16), True)  # the whole input, once, into channels_last
    g = torch.randn(ya.shape)
    ya.backward(g)
    w_grad = conv.weight.grad.clone()
    conv.zero_grad()
    conv(x.reshape(12, 2, 16, 16)).backward(g.reshape(want.shape))
    assert torch.equal(w_grad, conv.weight.grad)


def test_pooled_conv_bias_gradient_is_the_sum_of_the_output_gradient(small_chunks):
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(4, 6, 3, 18, 18)
    y = apply_flat(conv, x)
    assert y.grad_fn.next_functions[0][0].name().endswith("PooledConv2dBackward")
    g = torch.randn(y.shape) * 100
    y.backward(g)
    exact = g.double().sum((0, 1, 3, 4))  # float64: the reference both float32 sums are held to
    scale = g.double().abs().sum((0, 1, 3, 4))
    assert ((conv.bias.grad.double() - exact).abs() <= 1e-6 * scale).all()
    module = nn.Conv2d(3, 5, 3, padding=1).to(memory_format=torch.channels_last)
    module.load_state_dict(conv.state_dict())
    module(x.reshape(24, 3, 18, 18)).backward(g.reshape(24, 5, 18, 18))
    torch.testing.assert_close(conv.bias.grad, module.bias.grad, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(conv.weight.grad, module.weight.grad, rtol=1e-5, atol=1e-3)
