import itertools

import pytest
import torch

from flexsnn.errors import InputError
from flexsnn.multistep import MultiStepModule
from flexsnn.temporal import MODES, TTM, block_edges, transform_matrix, ttm

PAIRS = list(itertools.product(range(1, 13), range(1, 13)))


def _steps(t, extra=(2, 3)):
    """x[i] = (i + 1) * 10 + distinct per-element noise, so every step is recognisable."""
    g = torch.Generator().manual_seed(t)
    return torch.arange(1, t + 1, dtype=torch.float64).reshape(t, *([1] * len(extra))) * 10 + torch.rand(
        t, *extra, generator=g, dtype=torch.float64
    )


def test_hard_down_5_to_3_exact():
    x = _steps(5)
    out = ttm(x, 3, "hard")
    assert torch.equal(out[0], x[0] + x[1])
    assert torch.equal(out[1], x[2])
    assert torch.equal(out[2], x[3] + x[4])
    assert transform_matrix(5, 3).tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1]]


def test_hard_up_3_to_5_exact():
    x = _steps(3)
    out = ttm(x, 5, "hard")
    for j, i in enumerate([0, 0, 1, 2, 2]):
        assert torch.equal(out[j], x[i])
    assert transform_matrix(3, 5).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]


def _authors_edges(t_in, t_out):
    """Block edges the way the authors compute them: round(k * more / fewer - 1e-5) in floats."""
    fewer, more = min(t_in, t_out), max(t_in, t_out)
    return [round(k * more / fewer - 1e-5) for k in range(fewer + 1)]


def _expected_hard(t_in, t_out):
    """The hard TTM matrix [t_out, t_in] built from the edges: block sums down, copied runs up."""
    edges = _authors_edges(t_in, t_out)
    m = torch.zeros(t_out, t_in, dtype=torch.float64)
    for k in range(min(t_in, t_out)):
        if t_in > t_out:
            m[k, edges[k] : edges[k + 1]] = 1.0
        else:
            m[edges[k] : edges[k + 1], k] = 1.0
    return m


ALL_PAIRS_16 = [(a, b) for a in range(1, 17) for b in range(1, 17)]


def test_block_edges_match_the_integer_formula_and_the_authors_float_rule():
    for t_in, t_out in ALL_PAIRS_16:
        fewer, more = min(t_in, t_out), max(t_in, t_out)
        formula = [(2 * k * more + fewer - 1) // (2 * fewer) for k in range(fewer + 1)]
        assert block_edges(t_in, t_out) == formula == _authors_edges(t_in, t_out), (t_in, t_out)
    assert block_edges(3, 2) == [0, 1, 3] and block_edges(2, 3) == [0, 1, 3]  # 1.5 -> 1 (half DOWN)
    assert block_edges(7, 2) == [0, 3, 7]  # 3.5 -> 3
    with pytest.raises(InputError, match="t_out"):
        block_edges(3, 0)


@pytest.mark.parametrize("t_in,t_out", ALL_PAIRS_16)
def test_hard_and_trim_up_exact_tables_up_to_16(t_in, t_out):
    expected = _expected_hard(t_in, t_out)
    assert torch.equal(transform_matrix(t_in, t_out, "hard"), expected)
    x = _steps(t_in)
    # the forward (index_add / index_select paths) applies exactly that matrix
    torch.testing.assert_close(ttm(x, t_out, "hard"), torch.tensordot(expected, x, dims=([1], [0])), rtol=0, atol=1e-12)
    if t_in < t_out:
        assert torch.equal(transform_matrix(t_in, t_out, "trim"), expected)
        assert torch.equal(ttm(x, t_out, "trim"), ttm(x, t_out, "hard"))


def _assert_outputs(out, x, recipe):
    """recipe[j] lists the input steps summed into output j."""
    assert out.shape[0] == len(recipe)
    for j, steps in enumerate(recipe):
        torch.testing.assert_close(out[j], sum(x[i] for i in steps), rtol=0, atol=0)


@pytest.mark.parametrize(
    "t_in,t_out,recipe",
    [
        (3, 2, [[0], [1, 2]]),  # tie: the block edge 1.5 goes DOWN to 1
        (2, 3, [[0], [1], [1]]),  # tie: in1 covers outputs 1 and 2
        (4, 6, [[0], [1], [1], [2], [3], [3]]),  # edges 0, 1.5, 3, 4.5, 6 -> 0, 1, 3, 4, 6
        (6, 4, [[0], [1, 2], [3], [4, 5]]),
        (2, 7, [[0], [0], [0], [1], [1], [1], [1]]),  # edge 3.5 -> 3
        (7, 2, [[0, 1, 2], [3, 4, 5, 6]]),
        (5, 3, [[0, 1], [2], [3, 4]]),  # no tie: 5/3, 10/3 -> 2, 3
        (3, 5, [[0], [0], [1], [2], [2]]),
        (5, 2, [[0, 1], [2, 3, 4]]),  # edge 2.5 -> 2
        (2, 5, [[0], [0], [1], [1], [1]]),
    ],
)
def test_hard_hand_written_cases(t_in, t_out, recipe):
    x = _steps(t_in)
    _assert_outputs(ttm(x, t_out, "hard"), x, recipe)
    if t_in < t_out:
        _assert_outputs(ttm(x, t_out, "trim"), x, recipe)
    else:
        _assert_outputs(ttm(x, t_out, "trim"), x, [[j] for j in range(t_out)])


def test_soft_exact_tables():
    third = 1 / 3
    expected = torch.tensor(
        [[1, 2 * third, 0, 0, 0], [0, third, 1, third, 0], [0, 0, 0, 2 * third, 1]], dtype=torch.float64
    )
    assert torch.allclose(transform_matrix(5, 3, "soft"), expected, atol=1e-15)
    # 1 -> 2: one step spread evenly over two outputs; 2 -> 3: bins of width 2/3.
    assert transform_matrix(1, 2, "soft").tolist() == [[0.5], [0.5]]
    expected = torch.tensor([[2 * third, 0], [third, third], [0, 2 * third]], dtype=torch.float64)
    assert torch.allclose(transform_matrix(2, 3, "soft"), expected, atol=1e-15)


def test_trim_tables():
    assert transform_matrix(5, 3, "trim").tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
    assert torch.equal(transform_matrix(3, 5, "trim"), transform_matrix(3, 5, "hard"))
    x = _steps(6)
    assert torch.equal(ttm(x, 2, "trim"), x[:2])


@pytest.mark.parametrize("mode", MODES)
def test_identity_returns_input(mode):
    x = torch.rand(4, 2, 3)
    assert ttm(x, 4, mode) is x
    assert torch.equal(transform_matrix(4, 4, mode), torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("t_in,t_out", PAIRS)
def test_every_pair_invariants(t_in, t_out):
    x = _steps(t_in)
    hard = transform_matrix(t_in, t_out, "hard")
    assert hard.shape == (t_out, t_in)
    # Every input step lands in exactly one output (down) / every output gets exactly one input (up).
    if t_in >= t_out:
        assert torch.equal(hard.sum(0), torch.ones(t_in, dtype=torch.float64))  # blocks partition the input
        assert bool((hard.sum(1) >= 1).all())  # no empty block
        # each block is contiguous and blocks are in order
        cols = [torch.nonzero(row).flatten().tolist() for row in hard]
        flat = [i for c in cols for i in c]
        assert flat == list(range(t_in)) and all(c == list(range(c[0], c[-1] + 1)) for c in cols)
        assert torch.allclose(ttm(x, t_out, "hard").sum(0), x.sum(0), rtol=0, atol=1e-9)  # total kept
    else:
        assert torch.equal(hard.sum(1), torch.ones(t_out, dtype=torch.float64))  # runs partition the output
        rows = [int(torch.nonzero(r).item()) for r in hard]
        assert rows == sorted(rows) and set(rows) == set(range(t_in))  # contiguous runs, every input used
        out = ttm(x, t_out, "hard")
        for j in range(t_out):  # per-step magnitude kept: each output step IS some input step
            assert any(torch.equal(out[j], x[i]) for i in range(t_in))
    soft = transform_matrix(t_in, t_out, "soft")
    assert torch.allclose(soft.sum(0), torch.ones(t_in, dtype=torch.float64), atol=1e-12)  # counts kept
    assert bool((soft >= 0).all())
    # every output bin has total width t_in / t_out
    assert torch.allclose(soft.sum(1), torch.full((t_out,), t_in / t_out, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ttm(x, t_out, "soft").sum(0), x.sum(0), atol=1e-9)
    trim = ttm(x, t_out, "trim")
    if t_in >= t_out:
        assert torch.equal(trim, x[:t_out])
    else:
        assert torch.equal(trim, ttm(x, t_out, "hard"))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    for t_in, t_out in [(5, 3), (3, 5), (7, 2), (1, 4), (4, 1)]:
        x = torch.rand(t_in, 2, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, t_out=t_out: ttm(v, t_out, mode), (x,))


def test_any_trailing_shape_dtype_and_device_kept():
    for shape in [(6,), (6, 2), (6, 2, 3, 4, 5)]:
        x = torch.rand(shape, dtype=torch.float32)
        out = ttm(x, 4)
        assert out.shape == (4, *shape[1:]) and out.dtype == torch.float32 and out.device == x.device
    b = torch.rand(5, 2, 3, dtype=torch.bfloat16)
    assert ttm(b, 3).dtype == torch.bfloat16
    spikes = torch.tensor([[1], [0], [1], [1], [0]], dtype=torch.bool)
    assert ttm(spikes, 3).tolist() == [[1.0], [1.0], [1.0]]  # promoted to float counts
    empty = torch.zeros(5, 0, 3)
    assert ttm(empty, 2).shape == (2, 0, 3)


def test_transform_matrix_is_a_fresh_copy():
    m = transform_matrix(4, 2)
    m.zero_()
    assert transform_matrix(4, 2).sum() == 4


def test_module():
    mod = TTM("soft")
    assert isinstance(mod, MultiStepModule) and "soft" in repr(mod)
    x = torch.rand(6, 2, 3)
    assert torch.equal(mod(x, 4), ttm(x, 4, "soft"))
    assert list(mod.parameters()) == []


def test_bad_arguments_name_themselves():
    x = torch.rand(4, 2)
    with pytest.raises(InputError, match="t_out"):
        ttm(x, 0)
    with pytest.raises(InputError, match="t_out"):
        ttm(x, 2.0)
    with pytest.raises(InputError, match="mode"):
        ttm(x, 2, "nearest")
    with pytest.raises(InputError, match="mode"):
        TTM("bogus")
    with pytest.raises(InputError, match=r"\[T, B"):
        ttm(torch.tensor(1.0), 2)
    with pytest.raises(InputError, match="T = 0"):
        ttm(torch.zeros(0, 2), 2)
    with pytest.raises(InputError, match="torch.Tensor"):
        ttm([[1.0]], 2)
    with pytest.raises(InputError, match="t_in"):
        transform_matrix(0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.rand(7, 3, 4)
    for mode in MODES:
        assert torch.allclose(ttm(x.cuda(), 3, mode).cpu(), ttm(x, 3, mode), atol=1e-6)


@pytest.mark.parametrize("mode", ["hard", "soft", "trim"])
@pytest.mark.parametrize("t_in,t_out", [(5, 3), (3, 5), (4, 1), (1, 4), (6, 6)])
def test_channels_last_activations_keep_their_layout_values_and_gradients(mode, t_in, t_out):
    torch.manual_seed(0)
    x = torch.randn(t_in, 2, 3, 4, 5, dtype=torch.float64)
    x_cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_()  # [T, B, C, H, W] CL
    out = ttm(x_cl, t_out, mode)
    expected = torch.tensordot(transform_matrix(t_in, t_out, mode), x, dims=([1], [0]))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.permute(0, 1, 3, 4, 2).is_contiguous()  # no copy back to NCHW for the next conv
    g = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(out, x_cl, g)
    torch.testing.assert_close(
        grad, torch.tensordot(transform_matrix(t_in, t_out, mode), g, dims=([0], [0])), rtol=0, atol=1e-12
    )


def test_hard_downsampling_adds_left_to_right_exactly():
    x = torch.tensor([1e8, 1.0, -1e8, 3.0], dtype=torch.float32)  # float32: the order of the sum matters
    left_to_right = torch.zeros((), dtype=torch.float32)
    for v in x:
        left_to_right = left_to_right + v  # ((1e8 + 1) - 1e8) + 3 = 3 (the 1 is lost), pairwise gives 4
    assert ttm(x, 1).item() == left_to_right.item() == 3.0


# ---- on CPU the hard TTM runs block by block; index_select / index_add elsewhere -------------
def _layouts(t, seed=0):
    """The same [t, 3, 4, 5, 6] values as contiguous, channels_last and batch-first frames."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, 3, 4, 5, 6, generator=g)
    cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    batch_first = x.transpose(0, 1).contiguous().transpose(0, 1)  # a DataLoader's [B, T, ...], as model_input gives it
    return {"contiguous": x, "channels_last": cl, "batch_first": batch_first}


@pytest.mark.parametrize("mode", ["hard", "trim"])
@pytest.mark.parametrize("t_in,t_out", [(5, 3), (3, 5), (10, 4), (4, 10), (7, 1), (1, 7), (2, 3), (3, 2), (9, 8)])
def test_block_path_equals_the_index_path_bit_for_bit(monkeypatch, mode, t_in, t_out):
    import flexsnn.temporal as temporal

    for layout, x in _layouts(t_in).items():
        g = torch.randn(t_out, 3, 4, 5, 6, generator=torch.Generator().manual_seed(1))
        results = {}
        for path, blocks in (("blocks", True), ("index", False)):
            monkeypatch.setattr(temporal, "_runs_by_blocks", lambda _x, _b=blocks: _b)
            leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
            out = ttm(leaf, t_out, mode)
            (grad,) = torch.autograd.grad(out, leaf, g)
            results[path] = (out, grad)
        (out_b, grad_b), (out_i, grad_i) = results["blocks"], results["index"]
        assert torch.equal(out_b, out_i) and torch.equal(grad_b, grad_i), layout
        if layout == "channels_last":  # each step stays laid out as the input's steps
            assert out_b[0].is_contiguous(memory_format=torch.channels_last) and not out_b[0].is_contiguous()
        else:
            assert out_b.is_contiguous()


def test_block_path_is_differentiable_twice():
    for t_in, t_out in [(5, 3), (3, 5), (1, 4), (4, 1)]:
        x = torch.rand(t_in, 2, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(lambda v, t_out=t_out: ttm(v, t_out, "hard"), (x,))
