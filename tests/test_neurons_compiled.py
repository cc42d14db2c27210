"""The compiled neuron path equals the reference (values and gradients) in every mode."""

import pytest
import torch

from flexsnn.errors import InputError
from flexsnn.neurons import NeuronParams, compiled, lif_multistep
from flexsnn.neurons.compiled import compile_count, compiled_multistep, fallback_count


def reference(x, **kw):
    return lif_multistep(x, NeuronParams(**kw), backend="reference")


def compiled_path(x, **kw):
    return lif_multistep(x, NeuronParams(**kw), backend="compiled")


# A covering set: every value of every option appears at least once (each case compiles two
# kernels, a few seconds each on 2 cores, so the full product would be too slow for a test).
MODES = [
    dict(reset="hard", multi_spike=False, v_min=None, surrogate="triangle", detach_reset=False, decay=0.5),
    dict(reset="subtract", multi_spike=True, v_min=-1.0, surrogate="atan", detach_reset=False, decay=1.0),
    dict(reset="hard", multi_spike=True, v_min=-0.5, surrogate="sigmoid", detach_reset=True, decay=0.7),
    dict(
        reset="subtract",
        multi_spike=False,
        v_min=None,
        surrogate="sigmoid",
        detach_reset=True,
        decay=0.9,
        v_th=0.8,
        alpha=2.5,
    ),
    dict(reset="hard", multi_spike=False, v_min=-2.0, surrogate="atan", detach_reset=False, decay=1.0),
    # the paper's event-driven neuron (every mode of the traced kernels: test_neurons_kernels.py)
    dict(reset="subtract", multi_spike=True, v_min=-1.0, surrogate="exponential", detach_reset=False, decay=1.0),
]


@pytest.mark.parametrize("kw", MODES, ids=lambda kw: f"{kw['reset']}-ms{int(kw['multi_spike'])}-{kw['surrogate']}")
def test_values_and_gradients_equal_reference(kw):
    torch.manual_seed(0)
    x = (torch.randn(5, 3, 4, 6) * 1.5).requires_grad_()
    s_ref, v_ref = reference(x, **kw)
    s_cmp, v_cmp = compiled_path(x, **kw)
    assert torch.equal(s_ref, s_cmp)
    assert s_ref.sum() > 0  # the case actually fires
    torch.testing.assert_close(v_cmp, v_ref, rtol=1e-5, atol=1e-6)
    gs, gv = torch.randn_like(s_ref), torch.randn_like(v_ref)
    (g_ref,) = torch.autograd.grad((s_ref * gs).sum() + (v_ref * gv).sum(), x)
    (g_cmp,) = torch.autograd.grad((s_cmp * gs).sum() + (v_cmp * gv).sum(), x)
    assert g_ref.abs().sum() > 0
    torch.testing.assert_close(g_cmp, g_ref, rtol=1e-5, atol=1e-6)
    # Only the spikes get a gradient: the v_last branch is None in backward.
    s2, _ = reference(x, **kw)
    s3, _ = compiled_path(x, **kw)
    (g2,) = torch.autograd.grad((s2 * gs).sum(), x)
    (g3,) = torch.autograd.grad((s3 * gs).sum(), x)
    torch.testing.assert_close(g3, g2, rtol=1e-5, atol=1e-6)


def test_no_recompile_for_new_batch_shape_or_repeated_T():
    torch.manual_seed(1)
    p = NeuronParams()
    x = (torch.randn(4, 2, 5) * 2).requires_grad_()
    s, _ = compiled_multistep(x, p)
    s.sum().backward()
    before = compile_count()
    for shape in ((4, 7, 3), (4, 2, 5), (4, 11)):
        y = (torch.randn(*shape) * 2).requires_grad_()
        s, _ = compiled_multistep(y, p)
        s.sum().backward()
    assert compile_count() == before  # T=4 forward+backward kernels are reused for any [B, ...]


def test_no_grad_call_keeps_nothing_and_matches():
    torch.manual_seed(2)
    x = torch.randn(6, 3, 4) * 2
    with torch.no_grad():
        s, v = compiled_path(x, reset="subtract")
    s_ref, v_ref = reference(x, reset="subtract")
    assert torch.equal(s, s_ref) and not s.requires_grad
    torch.testing.assert_close(v, v_ref.detach())


def test_long_sequences_fall_back_to_eager_with_same_result(monkeypatch):
    monkeypatch.setattr(compiled, "MAX_COMPILED_STEPS", 3)
    torch.manual_seed(3)
    x = (torch.randn(5, 2, 3) * 2).requires_grad_()
    n = fallback_count()
    s, v = compiled_path(x)
    (g,) = torch.autograd.grad(s.sum() + v.sum(), x)
    s_ref, v_ref = reference(x)
    (g_ref,) = torch.autograd.grad(s_ref.sum() + v_ref.sum(), x)
    assert fallback_count() == n + 2  # forward and backward
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(g, g_ref)


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="x"):
        compiled_path(torch.ones(3))
    with pytest.raises(InputError, match="NaN"):
        compiled_path(torch.tensor([[float("nan")]]))
    with pytest.raises(InputError, match="reset"):
        compiled_path(torch.ones(2, 2), reset="soft")


def test_channels_last_activations_stay_channels_last_with_equal_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, 6, 6) * 1.5
    x_cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_()  # [T, B, C, H, W] CL
    x_ref = x.clone().requires_grad_()
    s_ref, v_ref = reference(x_ref)
    s_cl, v_cl = lif_multistep(x_cl, NeuronParams(), backend="compiled")
    assert torch.equal(s_cl, s_ref) and torch.equal(v_cl, v_ref)
    assert s_cl.permute(0, 1, 3, 4, 2).is_contiguous()  # not copied back to NCHW
    g, gv = torch.randn_like(x), torch.randn_like(x[0])
    (gx_ref,) = torch.autograd.grad((s_ref * g).sum() + (v_ref * gv).sum(), x_ref)
    (gx_cl,) = torch.autograd.grad((s_cl * g).sum() + (v_cl * gv).sum(), x_cl)
    torch.testing.assert_close(gx_cl, gx_ref, rtol=1e-5, atol=1e-6)
    assert gx_cl.permute(0, 1, 3, 4, 2).is_contiguous()
