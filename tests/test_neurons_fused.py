"""Fused BPTT path (flexsnn.neurons.fused) against the reference loop."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flexsnn.errors import InputError
from flexsnn.neurons import NeuronParams, lif_multistep
from flexsnn.neurons.fused import FusedLIFFunction, fused_multistep


def reference(x, **kw):
    return lif_multistep(x, NeuronParams(**kw), backend="reference")


def fused(x, **kw):
    return lif_multistep(x, NeuronParams(**kw), backend="fused")


MODES = list(
    itertools.product(
        [0.5, 0.8, 1.0],  # decay (1.0 = IF)
        ["hard", "subtract"],
        [False, True],  # multi_spike
        [None, -1.0],  # v_min
        ["triangle", "exponential", "sigmoid", "atan"],
        [False, True],  # detach_reset
    )
)


def mode_kwargs(mode, v_th=0.7):
    decay, reset, multi, v_min, surrogate, detach = mode
    return dict(
        v_th=v_th, decay=decay, reset=reset, multi_spike=multi, v_min=v_min, surrogate=surrogate, detach_reset=detach
    )


def random_input(seed, shape=(7, 3, 2, 4), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # Wide range so some steps fire several spikes and some hit the clip.
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m)))
def test_fused_matches_reference_values_and_gradients(mode):
    kw = mode_kwargs(mode)
    x = random_input(MODES.index(mode)).requires_grad_()
    s_ref, v_ref = reference(x, **kw)
    s_fus, v_fus = fused(x, **kw)
    assert torch.equal(s_ref, s_fus)
    assert torch.equal(v_ref, v_fus)
    g = torch.Generator().manual_seed(1)
    w_s = torch.randn(s_ref.shape, generator=g, dtype=x.dtype)
    w_v = torch.randn(v_ref.shape, generator=g, dtype=x.dtype)
    # loss on spikes only, and on spikes and the last membrane together
    for use_v in (False, True):
        loss_ref = (s_ref * w_s).sum() + ((v_ref * w_v).sum() if use_v else 0.0)
        loss_fus = (s_fus * w_s).sum() + ((v_fus * w_v).sum() if use_v else 0.0)
        (g_ref,) = torch.autograd.grad(loss_ref, x, retain_graph=True)
        (g_fus,) = torch.autograd.grad(loss_fus, x, retain_graph=True)
        assert torch.allclose(g_ref, g_fus, rtol=1e-10, atol=1e-12)
    # loss on v_last alone (the spikes' incoming gradient is zero)
    (g_ref,) = torch.autograd.grad(v_ref.sum(), x)
    (g_fus,) = torch.autograd.grad(v_fus.sum(), x)
    assert torch.allclose(g_ref, g_fus, rtol=1e-10, atol=1e-12)


def test_gradients_are_not_trivially_zero():
    # guard against the comparison above passing on all-zero gradients
    x = random_input(3).requires_grad_()
    s, _ = fused(x, reset="subtract")
    s.sum().backward()
    assert (x.grad != 0).float().mean() > 0.3
    assert (x.grad[:-1] != x.grad[-1]).any()  # earlier steps get temporal contributions


def test_fused_hand_computed_gradient():
    # Same example as tests/test_neurons_reference.py: x = [0.8, 0.9, 0.3], L = sum(s)
    # -> dL/dx = [0.90143, 0.5635, 0.3] (hard reset), [1.15, 0.7, 0.3] (detach_reset)
    for detach, expected in ((False, [0.90143, 0.5635, 0.3]), (True, [1.15, 0.7, 0.3])):
        x = torch.tensor([0.8, 0.9, 0.3], dtype=torch.float64).reshape(3, 1, 1).requires_grad_()
        s, _ = fused(x, detach_reset=detach)
        s.sum().backward()
        assert torch.allclose(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))


def test_fused_hand_computed_gradient_exponential():
    # Same example as tests/test_neurons_reference.py: IF, subtract, multi-spike, v_min -1,
    # x = [1.5, 0.2], L = sum(s) -> [2 e^-1 + (1 - 2 e^-1) 2 e^-0.6, 2 e^-0.6]
    x = torch.tensor([1.5, 0.2], dtype=torch.float64).reshape(2, 1, 1).requires_grad_()
    s, _ = fused(x, decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0, surrogate="exponential")
    s.sum().backward()
    e1, e06 = math.exp(-1.0), math.exp(-0.6)
    assert torch.allclose(
        x.grad.flatten(), torch.tensor([2 * e1 + (1 - 2 * e1) * 2 * e06, 2 * e06], dtype=torch.float64)
    )


def test_fused_hand_trace_if_multi_spike_clip():
    x = torch.tensor([2.5, -3.0, 0.4, 1.2, 2.7], dtype=torch.float64).reshape(5, 1, 1)
    s, v = fused(x, decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0)
    assert s.flatten().tolist() == [2.0, 0.0, 0.0, 0.0, 3.0]
    assert float(v) == pytest.approx(0.3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", [MODES[0], MODES[-1], MODES[len(MODES) // 2]], ids=["lif", "if-multi", "mid"])
def test_low_precision_forward_identical_and_gradients_close(dtype, mode):
    kw = mode_kwargs(mode)
    x = random_input(5, dtype=dtype).requires_grad_()
    s_ref, v_ref = reference(x, **kw)
    s_fus, v_fus = fused(x, **kw)
    assert s_fus.dtype == dtype and v_fus.dtype == dtype
    assert torch.equal(s_ref, s_fus) and torch.equal(v_ref, v_fus)
    (g_ref,) = torch.autograd.grad(s_ref.sum() + v_ref.sum(), x)
    (g_fus,) = torch.autograd.grad(s_fus.sum() + v_fus.sum(), x)
    assert g_fus.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(g_ref.double(), g_fus.double(), rtol=tol, atol=tol)


def test_no_graph_without_grad_and_single_node_with_grad():
    x = random_input(2)
    s, v = fused(x)
    assert s.grad_fn is None and v.grad_fn is None
    s, v = fused(x.requires_grad_())
    assert type(s.grad_fn).__name__.startswith("FusedLIFFunction")
    assert s.grad_fn is v.grad_fn  # one node for all T steps
    with torch.no_grad():
        s, _ = fused(x)
    assert s.grad_fn is None


def test_gradient_flows_to_upstream_parameters():
    torch.manual_seed(0)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    inp = torch.rand(5, 3, 4, dtype=torch.float64) * 2
    grads = []
    for fn in (reference, fused):
        w.grad = None
        s, _ = fn(inp @ w, reset="subtract")
        s.sum().backward()
        grads.append(w.grad.clone())
    assert torch.allclose(grads[0], grads[1])


def test_fused_validates_like_reference():
    with pytest.raises(InputError, match="decay"):
        fused(torch.zeros(2, 1), decay=2.0)
    with pytest.raises(InputError, match="T = 0"):
        fused(torch.zeros(0, 1))
    with pytest.raises(InputError, match="NaN"):
        fused(torch.full((2, 1), float("nan")))


def test_low_level_function_is_reachable():
    p = NeuronParams(decay=1.0, reset="subtract")
    x = random_input(4).requires_grad_()
    s1, v1 = FusedLIFFunction.apply(x, p)
    s2, v2 = fused_multistep(x, p)
    assert torch.equal(s1, s2) and torch.equal(v1, v2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    kw = mode_kwargs((1.0, "subtract", True, -1.0, "triangle", False))
    x = random_input(6).requires_grad_()
    s_cpu, v_cpu = fused(x, **kw)
    (g_cpu,) = torch.autograd.grad(s_cpu.sum() + v_cpu.sum(), x)
    xc = x.detach().cuda().requires_grad_()
    s_gpu, v_gpu = fused(xc, **kw)
    assert s_gpu.device.type == "cuda"
    (g_gpu,) = torch.autograd.grad(s_gpu.sum() + v_gpu.sum(), xc)
    assert torch.allclose(s_cpu, s_gpu.cpu()) and torch.allclose(g_cpu, g_gpu.cpu())


def test_non_contiguous_batch_first_input_transposed_to_time_first():
    # DataLoaders yield [B, T, ...]; the training loop passes the transposed (strided) view.
    batch_first = random_input(8, shape=(3, 6, 4)).requires_grad_()
    x = batch_first.transpose(0, 1)
    assert not x.is_contiguous()
    kw = mode_kwargs((0.5, "hard", True, -1.0, "triangle", False))
    s_ref, v_ref = reference(x, **kw)
    s_fus, v_fus = fused(x, **kw)
    assert torch.equal(s_ref, s_fus) and torch.equal(v_ref, v_fus)
    (g_ref,) = torch.autograd.grad(s_ref.sum() + v_ref.sum(), batch_first)
    (g_fus,) = torch.autograd.grad(s_fus.sum() + v_fus.sum(), batch_first)
    assert torch.allclose(g_ref, g_fus)


# ---- the [T, ...] buffers come from flexsnn.buffers.STEP_BUFFERS and are reused across steps
def _train_steps(pooled: bool, steps: int = 3):
    from flexsnn.buffers import STEP_BUFFERS

    STEP_BUFFERS.enabled = pooled
    try:
        torch.manual_seed(0)
        w = torch.randn(8, 8, requires_grad=True)
        kept, grads, ptrs = [], [], []
        for _ in range(steps):
            x = (torch.rand(6, 64, 96, 8) * 2).requires_grad_()  # 1.2 MiB per [T, ...] tensor: pooled
            spikes, v = fused(x @ w, v_th=0.7, decay=0.6, v_min=-0.5)
            ptrs.append(spikes.data_ptr())
            ((spikes * torch.linspace(0, 1, 8)).sum() + v.sum()).backward()
            kept.append((spikes, spikes.clone()))  # the caller keeps every step's result
            grads.append((x.grad.clone(), w.grad.clone()))
            w.grad = None
        return kept, grads, ptrs
    finally:
        STEP_BUFFERS.enabled = True


def test_pooled_buffers_give_the_same_results_and_never_overwrite_a_kept_result():
    kept, grads, ptrs = _train_steps(pooled=True)
    _, fresh_grads, _ = _train_steps(pooled=False)
    for (spikes, copy), (gx, gw), (fx, fw) in zip(kept, grads, fresh_grads):
        assert torch.equal(spikes, copy)  # a later step did not write into a result still held
        assert torch.equal(gx, fx) and torch.equal(gw, fw)
    assert len(set(ptrs)) == len(ptrs)  # kept results: every step got its own memory


@pytest.mark.parametrize("numba_kernels", [True, False])
def test_pooled_buffers_are_reused_once_the_previous_step_is_gone(numba_kernels):
    from flexsnn.buffers import BufferPool
    from flexsnn.neurons import cpu_kernels

    pool = BufferPool()  # this test's own pool, to count its blocks
    x = (torch.rand(6, 64, 96, 8) * 2).requires_grad_()
    ptrs = set()
    for _ in range(4):
        x.grad = None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("flexsnn.neurons.kernels.STEP_BUFFERS", pool)
            mp.setattr("flexsnn.neurons.cpu_kernels.STEP_BUFFERS", pool)
            mp.setattr(cpu_kernels.settings, "enabled", numba_kernels)
            spikes, _ = fused(x)
            spikes.sum().backward()
        ptrs |= {spikes.data_ptr(), x.grad.data_ptr()}
        del spikes
    # spikes, saved membranes and dx: three blocks, the same ones every step
    assert len(pool._blocks) == 3 and pool.pooled_bytes() == 3 * x.numel() * 4
    assert ptrs <= {b[0].data_ptr() for b in pool._blocks}


# ---- a neuron followed by AvgPool2d: one pass, the same values and gradients --------------------
POOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=2, divisor_override=3),
]


def neuron_pool_net(neuron, pool_kw, channels_last, side=9):
    from torch import nn

    from flexsnn.multistep import TimeFirstSequential

    torch.manual_seed(0)
    net = TimeFirstSequential(
        nn.Conv2d(2, 6, 3, padding=1), neuron, nn.AvgPool2d(**pool_kw), nn.Flatten(), nn.LazyLinear(3)
    )
    net(torch.zeros(1, 1, 2, side, side))  # materialise the lazy head
    neuron.reset_state()
    return net.to(memory_format=torch.channels_last) if channels_last else net


def one_layer_at_a_time(net, x):
    """The same layers, each run by itself (no pairing of neuron and pooling)."""
    from flexsnn.multistep import apply_flat, is_multistep

    for layer in net:
        x = layer(x) if is_multistep(layer) else apply_flat(layer, x)
    return x


@pytest.mark.parametrize("numba_kernels", [True, False], ids=["numba", "eager"])
@pytest.mark.parametrize("side", [9, 12], ids=["ragged", "tiled"])  # 12: 2x2 and 3x3 windows tile the map
@pytest.mark.parametrize("pool_kw", POOLS, ids=["k2", "k3_ceil", "k3s2p1_ceil", "k3s2p1_nopad", "divisor"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("mode", MODES[::7], ids=lambda m: "-".join(map(str, m)))
def test_neuron_then_avg_pool_equals_the_two_layers(mode, pool_kw, channels_last, side, numba_kernels, monkeypatch):
    """Bit for bit where both ways run the same kernels; where the one pass has no numba
    kernel (NCHW, overlapping or padded windows) it runs the eager loop while the neuron by
    itself runs numba's: the values still agree, the gradients to float rounding."""
    from flexsnn.neurons import LIF, cpu_kernels

    monkeypatch.setattr(cpu_kernels.settings, "enabled", numba_kernels)
    pooled_by_numba = []
    real = cpu_kernels.pooled_forward
    monkeypatch.setattr(cpu_kernels, "pooled_forward", lambda *a: pooled_by_numba.append(1) or real(*a))
    net = neuron_pool_net(LIF(**mode_kwargs(mode)), pool_kw, channels_last, side)
    x = (torch.rand(5, 3, 2, side, side) * 2.5).requires_grad_()
    params = [x, *net.parameters()]
    assert pooled_node_ran(net, x)
    got = net(x)
    want = one_layer_at_a_time(net, x)
    assert torch.equal(got, want)
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, params, g)
    want_grads = torch.autograd.grad(want, params, g)
    kw = mode_kwargs(mode)
    numba_neuron = numba_kernels and kw["surrogate"] == "triangle" and not kw["multi_spike"]
    same_kernels = bool(pooled_by_numba) or not numba_neuron
    for a, b in zip(got_grads, want_grads):
        if same_kernels:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got_grads[0].abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(net(x), want)
    if numba_neuron and channels_last:
        tiles = pool_kw.get("stride", pool_kw["kernel_size"]) == pool_kw["kernel_size"] and not pool_kw.get("padding")
        assert bool(pooled_by_numba) == (tiles and (side % pool_kw["kernel_size"] == 0 or not pool_kw.get("ceil_mode")))


def pooled_node_ran(net, x) -> bool:
    """Whether net(x)'s autograd graph holds the one-pass neuron + pooling node."""
    names, todo, seen = set(), [net(x).grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or any(fn is s for s in seen):
            continue
        seen.append(fn)  # kept alive, so no later node can be mistaken for it
        names.add(fn.name())
        todo += [nxt for nxt, _ in fn.next_functions]
    return "FusedLIFAvgPoolFunctionBackward" in names


def test_neuron_then_avg_pool_runs_as_one_node_only_where_nothing_is_lost():
    from flexsnn.neurons import IF, LIF

    x = torch.rand(4, 2, 2, 9, 9, requires_grad=True) * 3
    assert pooled_node_ran(neuron_pool_net(LIF(), POOLS[0], True), x)
    assert pooled_node_ran(neuron_pool_net(IF(multi_spike=True, v_min=-1.0), POOLS[0], False), x)
    # each of these must run the neuron by itself: the spikes are wanted, or another backend runs
    recorded = LIF()
    recorded.record = True
    streaming = LIF()
    streaming.stateful = True
    membrane = LIF()
    membrane.record_membrane = True
    hooked = LIF()
    calls = []
    hooked.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    for neuron in (recorded, streaming, membrane, hooked, LIF(backend="reference")):
        net = neuron_pool_net(neuron, POOLS[0], True)
        assert not pooled_node_ran(net, x)
    assert recorded.last_spike_count is not None and calls and calls[-1][:2] == (4, 2)
    pool_hooked = neuron_pool_net(LIF(), POOLS[0], True)
    pool_hooked[2].register_forward_pre_hook(lambda m, i: None)
    assert not pooled_node_ran(pool_hooked, x)


def test_neuron_then_avg_pool_keeps_checking_its_input():
    from flexsnn.neurons import LIF

    net = neuron_pool_net(LIF(), POOLS[0], True)
    x = torch.rand(3, 2, 2, 9, 9)
    net[0].bias.data[0] = float("nan")
    with pytest.raises(InputError, match="finite|NaN"):
        net(x)


@pytest.mark.parametrize("name, shape", [("nmnist_net", (2, 34, 34)), ("vgg9_dvs", (2, 32, 32))])
def test_staged_models_pair_their_neurons_and_pools_and_train_the_same(name, shape, monkeypatch):
    from flexsnn.models import build_model
    from flexsnn.neurons.modules import SpikingNeuron
    from flexsnn.runtime import use_channels_last

    torch.manual_seed(0)
    kwargs = {"width": 0.125} if name == "vgg9_dvs" else {}  # VGG9 narrowed to stay fast
    net = use_channels_last(build_model(name, **kwargs))
    x = (torch.rand(3, 2, *shape) < 0.3).float()
    cfgs = [(3,) * net.num_stages, (1,) + (2,) * (net.num_stages - 1)]

    def grads():
        net.zero_grad()
        for cfg in cfgs:
            net(x, time_config=cfg).square().mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    paired = grads()
    assert pooled_node_ran(lambda v: net(v, time_config=cfgs[0]), x)
    monkeypatch.setattr(SpikingNeuron, "forward_into_avg_pool", lambda self, v, args: None)
    assert not pooled_node_ran(lambda v: net(v, time_config=cfgs[0]), x)
    for a, b in zip(paired, grads()):
        assert torch.equal(a, b)


def test_an_unused_output_reaches_the_backward_as_none_not_zeros():
    from flexsnn.neurons.kernels import EAGER_KERNELS, Kernels

    seen = []

    def spy_backward(h, grad_spikes, grad_v, p):
        seen.append((grad_spikes is None, grad_v is None))
        return EAGER_KERNELS.backward(h, grad_spikes, grad_v, p)

    spy = Kernels(EAGER_KERNELS.forward, spy_backward)
    p = NeuronParams(decay=0.5, v_th=0.4)
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0)).requires_grad_()
    g = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))
    spikes, _ = FusedLIFFunction.apply(x, p, spy)
    (grad,) = torch.autograd.grad(spikes, x, g)
    spikes_ref, _ = reference(x, decay=0.5, v_th=0.4)
    (grad_ref,) = torch.autograd.grad(spikes_ref, x, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-7)
    _, v_last = FusedLIFFunction.apply(x, p, spy)  # the membrane alone
    (grad_v_only,) = torch.autograd.grad(v_last.sum(), x)
    _, v_ref = reference(x, decay=0.5, v_th=0.4)
    torch.testing.assert_close(grad_v_only, torch.autograd.grad(v_ref.sum(), x)[0], rtol=1e-6, atol=1e-7)
    assert seen == [(False, True), (True, False)]
