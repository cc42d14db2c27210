"""The numba kernels of the fused neuron: the eager loops' values, one pass per step.

Forward results (spikes, pooled spikes, last membranes) must equal the eager loops bit for bit;
gradients to float rounding (the eager ops may fuse a multiply-add). Every test checks that the
numba path really ran (or really did not, where it must not).
"""

from __future__ import annotations

import itertools
import multiprocessing
import subprocess
import sys

import pytest
import torch

from flexsnn.neurons import NeuronParams, cpu_kernels, lif_multistep
from flexsnn.neurons.fused import fused_avg_pool
from flexsnn.neurons.kernels import backward_loop, forward_loop

GRID = list(
    itertools.product(("hard", "subtract"), (None, -0.4), (False, True), (1.0, 0.6), (0.5, 1.0))
)  # reset, v_min, detach_reset, alpha, decay


@pytest.fixture
def spy(monkeypatch):
    """Names of the numba entry points called (the kernel pair is rebuilt over the spies)."""
    calls: list[str] = []
    for name in ("forward", "backward", "pooled_forward", "pooled_backward"):
        real = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    monkeypatch.setattr(cpu_kernels, "CPU_KERNELS", cpu_kernels.Kernels(cpu_kernels.forward, cpu_kernels.backward))
    return calls


def params(reset="hard", v_min=None, detach=False, alpha=1.0, decay=0.5, **kw) -> NeuronParams:
    return NeuronParams(v_th=0.7, decay=decay, reset=reset, v_min=v_min, detach_reset=detach, alpha=alpha, **kw)


def channels_last_steps(t, b, c, h, w, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, b, h, w, c, generator=g) * 0.9 + 0.25).permute(0, 1, 4, 2, 3)


def run_neuron(x, p, numba: bool, use_v_last: bool = False):
    """(spikes, v_last, dL/dx) of the fused neuron with the numba kernels on or off."""
    cpu_kernels.settings.enabled = numba
    try:
        x = x.detach().clone().requires_grad_(True)
        spikes, v_last = lif_multistep(x, p, backend="fused")
        weight = torch.linspace(-1, 1, spikes.numel()).reshape(spikes.shape)
        loss = (spikes * weight).sum() + (v_last.pow(2).sum() if use_v_last else 0)
        loss.backward()
        return spikes.detach(), v_last.detach(), x.grad
    finally:
        cpu_kernels.settings.enabled = True


def test_a_hand_computed_trace(spy):
    # decay 0.5, v_th 1, x = 0.6 at every step: h = 0.6, 0.9, 1.05 -> one spike at the last step.
    x = torch.full((3, 1, 1), 0.6, requires_grad=True)
    spikes, v_last = lif_multistep(x, NeuronParams(v_th=1.0, decay=0.5), backend="fused")
    assert spikes.flatten().tolist() == [0.0, 0.0, 1.0] and v_last.item() == 0.0
    (spikes.flatten() * torch.tensor([0.0, 0.0, 1.0])).sum().backward()
    # s' = 1 - |h - 1|: 0.6, 0.9, 0.95; du/dh = 1 - h s' (not fired): 0.64, 0.19
    # dx2 = 0.95, dx1 = 0.5 * 0.19 * 0.95, dx0 = 0.5 * 0.64 * dx1
    expected = [0.5 * 0.64 * 0.5 * 0.19 * 0.95, 0.5 * 0.19 * 0.95, 0.95]
    torch.testing.assert_close(x.grad.flatten(), torch.tensor(expected), rtol=1e-6, atol=1e-7)
    assert spy == ["forward", "backward"]


@pytest.mark.parametrize("reset, v_min, detach, alpha, decay", GRID)
@pytest.mark.parametrize("layout", ["flat", "nchw", "channels_last"])
def test_the_neuron_equals_the_eager_loops(spy, reset, v_min, detach, alpha, decay, layout):
    p = params(reset, v_min, detach, alpha, decay)
    if layout == "flat":
        x = torch.randn(6, 3, 50, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.25
    else:
        x = channels_last_steps(6, 3, 5, 4, 7)
        x = x.contiguous() if layout == "nchw" else x
    want = run_neuron(x, p, numba=False, use_v_last=True)
    assert spy == []
    got = run_neuron(x, p, numba=True, use_v_last=True)
    assert spy == ["forward", "backward"]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[0].stride() == x.stride() and got[2].stride() == x.stride()  # the input's layout
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    assert got[0].sum() > 0 and got[2].abs().sum() > 0


POOLS = [  # (kernel_size, divisor_override), map sizes (H, W)
    ((2, None), (8, 6)),
    ((2, None), (7, 9)),  # floor mode: the last row and column are in no window
    ((3, None), (9, 6)),
    ((3, None), (11, 10)),
    ((2, 3), (6, 6)),
]


@pytest.mark.parametrize("reset, v_min, detach, alpha, decay", GRID[::3])
@pytest.mark.parametrize("pool, size", POOLS)
def test_the_neuron_with_pooling_equals_the_eager_loop(spy, reset, v_min, detach, alpha, decay, pool, size):
    p = params(reset, v_min, detach, alpha, decay)
    k, divisor = pool
    pool_args = (k, k, 0, False, True, divisor)
    x0 = channels_last_steps(5, 3, 6, *size, seed=2)

    def run(numba):
        cpu_kernels.settings.enabled = numba
        try:
            x = x0.detach().clone().requires_grad_(True)
            pooled, v_last = fused_avg_pool(x, p, pool_args)
            g = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(3))  # NCHW: copied to channels_last
            (pooled * g).sum().backward()
            return pooled.detach(), v_last, x.grad
        finally:
            cpu_kernels.settings.enabled = True

    want = run(False)
    assert spy == []
    got = run(True)
    assert spy == ["pooled_forward", "pooled_backward"]
    assert got[0].shape == (5, 3, 6, size[0] // k, size[1] // k)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    if size[0] % k:  # rows in no window: no gradient through the spikes, the membrane path only
        assert got[2].abs().sum() > 0


def test_two_threads_give_the_one_thread_results(spy):
    x = channels_last_steps(3, 4, 16, 32, 32, seed=4)  # 65,536 elements a step: two parts
    p = params("hard", -0.4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert len(cpu_kernels._parts(x[0].numel(), 1, cpu_kernels.ALIGN)) == 1
        one = run_neuron(x, p, numba=True)
        one_pooled = fused_avg_pool(x, p, (2, 2, 0, False, True, None))[0]
        torch.set_num_threads(2)
        assert len(cpu_kernels._parts(x[0].numel(), 1, cpu_kernels.ALIGN)) == 2
        two = run_neuron(x, p, numba=True)
        two_pooled = fused_avg_pool(x, p, (2, 2, 0, False, True, None))[0]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)  # elementwise work: the split changes no rounding
    assert torch.equal(one_pooled, two_pooled)
    assert spy.count("forward") == 2 and spy.count("pooled_forward") == 2


def test_the_parts_table(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert cpu_kernels._parts(100_000, 1, 16) == [(0, 33328), (33328, 66656), (66656, 100_000)]
    assert cpu_kernels._parts(1000, 1, 16) == [(0, 1000)]  # too small to hand off
    assert cpu_kernels._parts(10, 10_000, 1) == [(0, 3), (3, 6), (6, 10)]
    assert cpu_kernels._parts(5, 10_000, 1) == [(0, 5)]  # 50,000 elements: one part of 32,768 or more
    assert cpu_kernels._parts(5, 40_000, 1) == [(0, 1), (1, 3), (3, 5)]


@pytest.mark.parametrize(
    "case",
    ["multi_spike", "exponential", "float64", "strided", "time_inside", "disabled"],
)
def test_what_the_kernels_do_not_cover_runs_the_eager_loops(spy, case, monkeypatch):
    p = params(
        "subtract", multi_spike=case == "multi_spike", surrogate="exponential" if case == "exponential" else "triangle"
    )
    x = channels_last_steps(4, 2, 3, 5, 6)
    if case == "float64":
        x = x.double()
    elif case == "strided":
        x = x[:, :, :, ::2]
    elif case == "time_inside":
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    elif case == "disabled":
        monkeypatch.setattr(cpu_kernels.settings, "enabled", False)
    assert not cpu_kernels.supports(x, p)
    x = x.requires_grad_(True)
    spikes, _ = lif_multistep(x, p, backend="fused")
    spikes.sum().backward()
    assert spy == []
    ref = x.detach().clone().requires_grad_(True)
    ref_spikes, _ = lif_multistep(ref, p, backend="reference")
    ref_spikes.sum().backward()
    assert torch.equal(spikes, ref_spikes)
    torch.testing.assert_close(x.grad, ref.grad)


def test_a_gradient_in_another_layout_goes_to_the_eager_backward():
    p = params("hard", -0.4)
    x = channels_last_steps(4, 2, 3, 5, 6)
    _, _, h = cpu_kernels.forward(x, p, True)
    grad = torch.randn(x.shape)  # NCHW steps against channels_last membranes
    assert grad.stride() != h.stride()
    got = cpu_kernels.backward(h, grad, None, p)
    want = backward_loop(h, grad, None, p)
    assert torch.equal(got, want)  # the eager loop itself ran
    same = torch.empty_like(h).copy_(grad)  # the same values in the membranes' layout: numba
    torch.testing.assert_close(cpu_kernels.backward(h, same, None, p), want, rtol=1e-5, atol=1e-6)


def test_the_forward_equals_the_eager_forward_bit_for_bit_with_membranes():
    p = params("subtract", -0.4, decay=0.8)
    x = channels_last_steps(7, 2, 4, 3, 5, seed=5)
    got = cpu_kernels.forward(x, p, True)
    want = forward_loop(x, p, True)
    for a, b in zip(got, want):
        assert torch.equal(a, b) and a.stride() == b.stride()
    assert cpu_kernels.forward(x, p, False)[2] is None


def test_nonfinite_inputs_reach_the_last_membrane_as_in_the_eager_loop(spy):
    x = channels_last_steps(4, 2, 3, 4, 4)
    x[1, 0, 2, 1, 3] = float("inf")
    x[2, 1, 0, 0, 0] = float("nan")
    for reset in ("hard", "subtract"):
        p = params(reset)
        got = cpu_kernels.forward(x, p, False)
        want = forward_loop(x, p, False)
        assert torch.equal(got[0], want[0])
        torch.testing.assert_close(got[1], want[1], equal_nan=True, rtol=0, atol=0)
        assert not torch.isfinite(got[1]).all()  # check_last_membrane then checks x


def _run_parts_in_child(queue) -> None:
    from flexsnn import workers

    out = [0, 0]
    workers.run_parts(lambda i: out.__setitem__(i, i + 1), 2)
    queue.put(out)


@pytest.mark.skipif(not hasattr(multiprocessing, "get_context") or sys.platform != "linux", reason="fork: Linux")
def test_worker_pools_start_anew_in_a_forked_child():
    from flexsnn import workers

    workers.run_parts(lambda i: None, 2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_run_parts_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("run_parts hung in a forked child (the parent's workers do not exist there)")
    assert child.exitcode == 0 and queue.get(timeout=5) == [1, 2]


def test_importing_flexsnn_does_not_load_numba():
    code = "import sys, flexsnn, flexsnn.neurons, flexsnn.staged; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
