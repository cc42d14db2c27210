"""NIR export / import of deployable networks: round trips, metadata, defaults, bad graphs."""

from __future__ import annotations

import dataclasses
import json

import nir
import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.deploy import SumPool2d, from_nir, read_nir, simulate, to_nir, write_nir
from flexsnn.deploy.nir import METADATA_KEY, PROFILES, nir_metadata
from flexsnn.errors import InputError
from flexsnn.neurons import IF
from flexsnn.staged import staged_from_layers

SHAPE = (2, 10, 10)


def deploy_if():
    return IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0)


def deployable_net(seed: int = 0, scale: float = 8.0):
    """Two stages (conv-IF-avgpool, conv-IF-flatten-linear-IF) + linear head, bias-free."""
    torch.manual_seed(seed)
    layers = [
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        deploy_if(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, bias=False),
        deploy_if(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 12, bias=False),
        deploy_if(),
    ]
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(scale)
    head = nn.Linear(12, 5, bias=False)
    return staged_from_layers(layers, [3], head=head, input_kind="frames", input_shape=SHAPE, time_config=(4, 3))


def random_frames(t=4, b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((t, b, *SHAPE), 0.4), generator=g)


def random_events(n_samples=3, n=150, seed=2):
    rng = np.random.default_rng(seed)
    dtype = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    out = []
    for _ in range(n_samples):
        ev = np.zeros(n, dtype)
        ev["x"], ev["y"] = rng.integers(0, SHAPE[2], n), rng.integers(0, SHAPE[1], n)
        ev["p"], ev["t"] = rng.integers(0, 2, n), np.sort(rng.integers(0, 10_000, n))
        out.append(ev)
    return out


def test_round_trip_identical_time_stepped_outputs_and_stages():
    net = deployable_net().eval()
    graph = to_nir(net)
    assert [
        type(graph.nodes[n]).__name__
        for n in ["conv2d_0", "if_1", "sumpool2d_2", "conv2d_3", "if_4", "flatten_5", "affine_6", "if_7", "affine_8"]
    ] == ["Conv2d", "IF", "SumPool2d", "Conv2d", "IF", "Flatten", "Affine", "IF", "Affine"]
    # the 1/4 of the average pool moved into the next conv's weights
    np.testing.assert_array_equal(graph.nodes["conv2d_3"].weight, net.stages[1][0].weight.detach().numpy() * 0.25)
    back = from_nir(graph).eval()
    assert back.num_stages == 2 and back.time_config == (4, 3) and back.input_shape == SHAPE
    assert isinstance(back.stages[0][2], SumPool2d) and isinstance(back.head, nn.Linear)
    x = random_frames()
    for cfg in [(4, 3), (4, 1), (4, 4)]:
        out, out_back = net(x, time_config=cfg), back(x, time_config=cfg)
        assert out.abs().sum() > 0
        assert torch.equal(out, out_back), cfg
    # neuron options restored from the metadata
    neuron = back.stages[0][1]
    assert (neuron.v_th, neuron.reset, neuron.multi_spike, neuron.v_min) == (1.0, "subtract", True, -1.0)


def test_round_trip_identical_event_driven_results():
    net = deployable_net(scale=6.0)
    back = from_nir(to_nir(net))
    events = random_events()
    a = simulate(net, events, (SHAPE[2], SHAPE[1], SHAPE[0]), num_threads=1)
    b = simulate(back, events, (SHAPE[2], SHAPE[1], SHAPE[0]), num_threads=1)
    assert sum(r.synops for r in a) > 0
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.scores, rb.scores)
        np.testing.assert_array_equal(ra.output_spikes, rb.output_spikes)
        np.testing.assert_array_equal(ra.layer_spikes, rb.layer_spikes)
        assert ra.synops == rb.synops


def test_avg_pool_mode_and_linear_nodes():
    net = deployable_net()
    graph = to_nir(net, pool="avg", linear="linear")
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert "AvgPool2d" in kinds and "Linear" in kinds and "Affine" not in kinds and "SumPool2d" not in kinds
    back = from_nir(graph).eval()
    x = random_frames()
    assert torch.equal(net.eval()(x), back(x))


def test_metadata_survives_write_read(tmp_path):
    net = deployable_net()
    graph = to_nir(net, extra={"recipe": "mtt", "epochs": 3})
    meta = nir_metadata(graph)
    assert meta["neurons"]["if_1"] == {
        "type": "IF",
        "v_th": 1.0,
        "decay": 1.0,
        "reset": "subtract",
        "multi_spike": True,
        "v_min": -1.0,
        "threshold_rule": "u >= v_th",
    }
    assert meta["stages"] == [
        ["conv2d_0", "if_1", "sumpool2d_2"],
        ["conv2d_3", "if_4", "flatten_5", "affine_6", "if_7"],
    ]
    assert meta["head"] == ["affine_8"] and meta["time_config"] == [4, 3] and meta["ttm_mode"] == "hard"
    assert meta["input_ttm_mode"] == "hard"
    assert meta["pool_folding"] == {"sumpool2d_2": {"from": "AvgPool2d", "scale": 0.25, "folded_into": "conv2d_3"}}
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    read = nir.read(path)
    assert nir_metadata(read) == meta
    assert nir_metadata(read)["extra"] == {"recipe": "mtt", "epochs": 3}
    back = from_nir(read).eval()
    x = random_frames()
    assert torch.equal(net.eval()(x, time_config=(4, 2)), back(x, time_config=(4, 2)))


def test_input_ttm_mode_survives_the_graph():
    net = deployable_net()
    trimmed = staged_from_layers(
        [m for s in net.stages for m in s],
        [3],
        head=net.head,
        input_kind="frames",
        input_shape=SHAPE,
        input_ttm_mode="trim",
    )
    back = from_nir(to_nir(trimmed, input_shape=SHAPE))
    assert (back.ttm_mode, back.input_ttm_mode) == ("hard", "trim")
    x = random_frames(t=6)
    assert torch.equal(trimmed.eval()(x, time_config=(2, 3)), back.eval()(x, time_config=(2, 3)))
    assert torch.equal(back(x, time_config=(2, 3)), back(x[:2], time_config=(2, 3)))  # only the first 2 frames


def _plain_graph(v_th=0.5, bias=None, extra_node=None):
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(4, 3 * 4 * 4)).astype(np.float32)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(
            input_shape=(6, 6), weight=w1, stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(3, np.float32)
        ),
        "spk": nir.IF(r=np.ones((3, 4, 4), np.float32), v_threshold=np.full((3, 4, 4), v_th, np.float32)),
        "flat": nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=w2, bias=np.zeros(4, np.float32) if bias is None else bias),
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    order = ["input", "conv", "spk", "flat", "fc", "output"]
    if extra_node is not None:
        nodes["odd"] = extra_node
        order.insert(3, "odd")
    return _graph(nodes, list(zip(order[:-1], order[1:])))


def _graph(nodes, edges):
    try:  # nir >= 1.0.5 type-checks on construction; the odd graphs here are checked by from_nir
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    except TypeError:  # nir 1.0.4 (the version sinabs pins) has no type_check
        return nir.NIRGraph(nodes=nodes, edges=edges)


def test_graph_without_metadata_follows_the_nir_spec():
    """No flexsnn metadata: single spike, reset to v_reset = 0, no floor (NIR's IF), dt = 1."""
    graph = _plain_graph(v_th=0.5)
    assert nir_metadata(graph) is None
    net = from_nir(graph)
    assert net.num_stages == 1 and isinstance(net.head, nn.Linear)
    neuron = net.stages[0][1]
    assert isinstance(neuron, IF)
    assert (neuron.v_th, neuron.reset, neuron.multi_spike, neuron.v_min) == (0.5, "hard", False, None)
    # hand trace over two steps: conv -> IF(0.5, one spike, reset to 0) -> flatten -> fc
    x = torch.rand(2, 1, 2, 6, 6) * 2
    w_conv = torch.from_numpy(graph.nodes["conv"].weight)
    w_fc = torch.from_numpy(graph.nodes["fc"].weight)
    u = torch.zeros(1, 3, 4, 4)
    expected = []
    for t in range(2):
        u = u + nn.functional.conv2d(x[t], w_conv)
        s = (u >= 0.5).float()
        u = u * (1 - s)
        expected.append(s.flatten(1) @ w_fc.T)
    out = net.eval()(x)
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, torch.stack(expected))


def test_biases_are_kept_and_vector_input_graphs_load():
    """An MLP as peers write it: Input (N,), Affine with biases, LIF with scalar params, LI readout."""
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    w2, b2 = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    dt, tau = 1e-3, 4e-3  # decay 1 - dt/tau = 0.75
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc1": nir.Affine(weight=w1, bias=b1),
        "lif": nir.LIF(tau=np.array(tau), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(0.25)),
        "fc2": nir.Affine(weight=w2, bias=b2),
        "li": nir.LI(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    graph = _graph(nodes, list(zip(order[:-1], order[1:])))
    net = from_nir(graph, dt=dt).eval()
    assert net.input_shape == (4,) and net.head is None  # the LI readout is a neuron: no separate head
    x = torch.randn(5, 2, 4)
    # Euler steps of NIR's ODEs with r = 1: v += dt/tau * (-v + r * I)
    v, li, expected = torch.zeros(2, 5), torch.zeros(2, 3), []
    for t in range(5):
        v = v + dt / tau * (-v + (x[t] @ torch.from_numpy(w1).T + torch.from_numpy(b1)))
        s = (v >= 0.25).float()
        v = v * (1 - s)
        li = li + dt / 2e-3 * (-li + s @ torch.from_numpy(w2).T + torch.from_numpy(b2))
        expected.append(li)
    torch.testing.assert_close(net(x), torch.stack(expected), rtol=1e-5, atol=1e-5)
    lif = net.stages[0][1]
    assert lif.decay == pytest.approx(0.75) and (lif.reset, lif.multi_spike, lif.v_min) == ("hard", False, None)


def test_cuba_lif_node_hand_trace():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    dt = 1e-4
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "fc": nir.Linear(weight=w),
        "cuba": nir.CubaLIF(
            tau_syn=np.full(3, 2e-4),
            tau_mem=np.full(3, 5e-4),
            r=np.full(3, 5.0),
            v_leak=np.zeros(3),
            v_threshold=np.full(3, 0.5),
            w_in=np.full(3, 2.0),
        ),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    net = from_nir(_graph(nodes, list(zip(order[:-1], order[1:]))), dt=dt).eval()
    x = torch.rand(6, 1, 2) * 2
    # snnTorch's Synaptic (what this node describes): i = 0.5 i + x W^T (w_in dt/tau_syn = 1),
    # v = 0.8 v + i (r dt/tau_mem = 1), one spike at v >= 0.5, reset to 0
    i, v, expected = torch.zeros(1, 3), torch.zeros(1, 3), []
    for t in range(6):
        i = 0.5 * i + x[t] @ torch.from_numpy(w).T
        v = 0.8 * v + i
        s = (v >= 0.5).float()
        v = v * (1 - s)
        expected.append(s)
    out = net(x)
    assert out.sum() > 0
    torch.testing.assert_close(out, torch.stack(expected))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(extra_node=nir.Threshold(threshold=np.ones((3, 4, 4)))), "Threshold is not supported"),
    ],
)
def test_bad_graphs_raise_clear_errors(bad, message):
    graph = _plain_graph(**bad)
    with pytest.raises(InputError, match=message):
        from_nir(graph)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (
            lambda g: g.nodes["conv"].weight.__setitem__((0, 0, 0, 0), np.nan),
            r"node 'conv' \(Conv2d\): weight contains NaN",
        ),
        (
            lambda g: g.nodes["fc"].weight.__setitem__((1, 2), np.inf),
            r"node 'fc' \(Affine\): weight contains NaN or inf",
        ),
        (lambda g: setattr(g.nodes["fc"], "bias", np.array([0.0, np.nan, 0.0, 0.0])), r"node 'fc' \(Affine\): bias"),
        (
            lambda g: setattr(g.nodes["spk"], "v_threshold", np.full((3, 4, 4), np.inf)),
            r"node 'spk' \(IF\): v_threshold",
        ),
        (
            lambda g: setattr(g.nodes["fc"], "weight", np.ones((4, 47), np.float32)),
            r"node 'fc' \(Linear\) does not fit its input shaped \(48,\)",
        ),
        (
            lambda g: setattr(g.nodes["fc"], "bias", np.zeros(5, np.float32)),
            r"node 'fc' \(Affine\): bias must have 4 entries",
        ),
        (
            lambda g: setattr(g.nodes["conv"], "weight", np.ones((3, 2, 3), np.float32)),
            r"node 'conv' \(Conv2d\): weight must be \[C_out",
        ),
        (
            lambda g: setattr(g.nodes["spk"], "r", np.ones((3, 5, 5), np.float32)),
            r"node 'spk' \(IF\): r has shape \(3, 5, 5\)",
        ),
        (
            lambda g: setattr(g.nodes["spk"], "v_reset", np.full((3, 4, 4), 0.2, np.float32)),
            r"node 'spk' \(IF\): a reset to v_reset != 0",
        ),
    ],
)
def test_hostile_values_and_shapes_are_refused_naming_the_node(corrupt, message):
    graph = _plain_graph()
    corrupt(graph)
    with pytest.raises(InputError, match=message):
        from_nir(graph)


def test_branching_graph_and_non_uniform_threshold_raise():
    graph = _plain_graph()
    graph.nodes["fc2"] = nir.Affine(weight=np.zeros((4, 48), np.float32), bias=np.zeros(4, np.float32))
    graph.edges.append(("flat", "fc2"))
    with pytest.raises(InputError, match="sequential"):
        from_nir(graph)
    graph = _plain_graph()
    graph.nodes["spk"].v_threshold[0, 0, 0] = 2.0
    with pytest.raises(InputError, match="same for every neuron"):
        from_nir(graph)
    with pytest.raises(InputError, match="nir.NIRGraph"):
        from_nir({"nodes": {}})


def test_corrupt_metadata_raises():
    graph = _plain_graph()
    graph.metadata = {METADATA_KEY: "{not json"}
    with pytest.raises(InputError, match="JSON"):
        from_nir(graph)
    graph.metadata = {METADATA_KEY: json.dumps({"format": "other/9"})}
    with pytest.raises(InputError, match="format"):
        from_nir(graph)


def test_to_nir_refuses_batchnorm_biases_and_unknown_layers():
    net = deployable_net()
    with pytest.raises(InputError, match="input_shape"):
        to_nir(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), deploy_if(), nn.Flatten(), nn.Linear(8, 2, bias=False)))
    with pytest.raises(InputError, match="fold BN first"):
        to_nir(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)), input_shape=(2, 4, 4))
    with pytest.raises(InputError, match="non-zero bias"):
        to_nir(nn.Sequential(nn.Conv2d(2, 2, 1)), input_shape=(2, 4, 4))
    with pytest.raises(InputError, match="MaxPool2d"):
        to_nir(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), deploy_if(), nn.MaxPool2d(2)), input_shape=(2, 4, 4))
    with pytest.raises(InputError, match="pool must be one of"):
        to_nir(net, pool="max")


def test_lif_round_trip():
    from flexsnn.neurons import LIF

    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(2 * 10 * 10, 8, bias=False), LIF(decay=0.75, reset="hard")]
    net = staged_from_layers(layers, [], head=nn.Linear(8, 3, bias=False), input_kind="frames", input_shape=SHAPE)
    graph = to_nir(net)
    lif = graph.nodes["lif_2"]
    np.testing.assert_allclose(lif.tau, 4.0)  # 1 / (1 - 0.75)
    x = random_frames()
    assert torch.equal(net(x), from_nir(graph)(x))
    graph.metadata = {}  # without metadata: decay from tau (Euler, dt = 1)
    assert from_nir(graph).stages[0][2].decay == pytest.approx(0.75)


def test_sinabs_reads_the_exported_graph():
    sinabs = pytest.importorskip("sinabs")
    net = deployable_net().eval()
    graph = to_nir(net)
    t, b = 4, 2
    x = random_frames(t=t, b=b)
    model = sinabs.from_nir(graph, batch_size=b)
    # sinabs' squeezed layers take [B*T, ...], batch-major
    out = model(x.transpose(0, 1).reshape(b * t, *SHAPE))
    if isinstance(out, tuple):  # nirtorch >= 2 returns (output, state)
        out = out[0]
    out = out.reshape(b, t, -1).transpose(0, 1)
    torch.testing.assert_close(out, net(x, time_config=(t, t)))


def test_channels_last_weights_export_contiguous_and_identical(tmp_path):
    from flexsnn.runtime import use_channels_last

    net = deployable_net().eval()
    reference = to_nir(net)
    use_channels_last(net)  # as fit() / InferenceRunner leave a trained model
    graph = to_nir(net)
    for name in ("conv2d_0", "conv2d_3"):
        assert graph.nodes[name].weight.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(graph.nodes[name].weight, reference.nodes[name].weight)
    nir.write(tmp_path / "net.nir", graph)
    x = random_frames()
    assert torch.equal(
        from_nir(nir.read(tmp_path / "net.nir")).eval()(x, time_config=(4, 3)), net(x, time_config=(4, 3))
    )


def nir_neuron_net(seed=0):
    """deployable_net with NIR's own neurons (one spike, reset to 0, no floor) and one LIF."""
    from flexsnn.neurons import LIF

    torch.manual_seed(seed)
    layers = [
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        IF(v_th=1.0, reset="hard"),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, bias=False),
        LIF(v_th=1.0, decay=0.75, reset="hard"),
        nn.Flatten(),
    ]
    head = nn.Linear(6 * 3 * 3, 5, bias=False)
    with torch.no_grad():
        for m in [*layers, head]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(8.0)
    return staged_from_layers(layers, [3], head=head, input_kind="frames", input_shape=SHAPE).eval()


@pytest.mark.parametrize("dt", [1.0, 1e-4, 1e-3])
def test_dt_sets_the_time_constants_and_a_stripped_graph_reads_back_with_it(dt):
    net = nir_neuron_net()
    graph = to_nir(net, dt=dt)
    np.testing.assert_allclose(graph.nodes["if_1"].r, 1.0 / dt, rtol=1e-6)  # dv/dt = r I: one step adds I
    np.testing.assert_allclose(graph.nodes["lif_4"].tau, dt / 0.25, rtol=1e-6)  # Euler: 1 - dt/tau = 0.75
    np.testing.assert_allclose(graph.nodes["lif_4"].r, 4.0, rtol=1e-6)  # r = tau / dt: unit input gain
    assert nir_metadata(graph)["dt"] == dt
    x = random_frames()
    expected = net(x)
    assert expected.abs().sum() > 0
    assert torch.equal(from_nir(graph).eval()(x), expected)  # dt from the metadata
    graph.metadata = {}  # plain NIR: the spec's neurons are these neurons, given the same dt
    torch.testing.assert_close(from_nir(graph, dt=dt).eval()(x), expected)
    with pytest.raises(InputError, match="dt must be a finite number > 0"):
        from_nir(graph, dt=0)


def test_peer_profiles_write_what_their_importers_read():
    net = nir_neuron_net()
    kinds = lambda g: [type(g.nodes[n]).__name__ for n in g.nodes if n not in ("input", "output")]  # noqa: E731
    snn = to_nir(net, profile="snntorch")
    # snnTorch: no SumPool2d mapping, IF read as Leaky(0.9): AvgPool2d with the weights unscaled, IF as a LIF
    assert kinds(snn) == ["Conv2d", "LIF", "AvgPool2d", "Conv2d", "LIF", "Flatten", "Affine"]
    np.testing.assert_array_equal(snn.nodes["conv2d_3"].weight, net.stages[1][0].weight.detach().numpy())
    assert snn.nodes["flatten_5"].start_dim == 1 and nir_metadata(snn)["dt"] == 1e-4
    assert float(np.exp(np.log1p(-1e-4 / snn.nodes["lif_1"].tau.astype(np.float64)).max())) == 1.0  # decay rounds to 1
    sj = to_nir(net, profile="spikingjelly")
    assert kinds(sj)[2] == "AvgPool2d" and sj.nodes["flatten_5"].start_dim == 0
    np.testing.assert_allclose(sj.nodes["if_1"].r, 1e4)
    norse = to_nir(net, profile="norse")
    assert kinds(norse)[2] == "SumPool2d" and norse.nodes["flatten_5"].start_dim == 1
    np.testing.assert_allclose(norse.nodes["if_1"].r, 1.0)  # Norse's IAF adds the input per step
    np.testing.assert_allclose(norse.nodes["lif_4"].r, 1.0)  # its LIF ignores r: the threshold is scaled
    np.testing.assert_allclose(norse.nodes["lif_4"].v_threshold, 0.25)
    sinabs = to_nir(
        nn.Sequential(
            nn.Flatten(),
            nn.Linear(200, 4, bias=False),
            IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0),
            nn.Linear(4, 2, bias=False),
        ),
        input_shape=SHAPE,
        profile="sinabs",
    )
    assert sinabs.nodes["if_2"].v_threshold.shape == (1,)  # Sinabs fails on per-neuron LIF arrays
    # every peer profile reads its own file back as the same model (Norse's exporter, which the
    # "norse" import profile reads, writes dt * tau; Norse's importer, which the export targets, reads tau)
    x = random_frames()
    for name in ("snntorch", "spikingjelly", "norse"):
        graph = to_nir(net, profile=name)
        graph.metadata = {}
        reader = dataclasses.replace(PROFILES[name], tau_times_dt=False)
        torch.testing.assert_close(from_nir(graph, profile=reader).eval()(x), net(x))


def test_peer_profile_warns_about_what_the_reader_runs_differently():
    net = deployable_net()  # multi-spike, subtract reset, floor -1
    with pytest.warns(UserWarning, match=r"if_1: multi_spike=True \(reader: False\), reset='subtract'"):
        graph = to_nir(net, profile="spikingjelly")
    assert nir_metadata(graph)["neurons"]["if_1"]["multi_spike"] is True  # stated for flexsnn readers
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_nir(net)  # flexsnn reads its metadata: nothing to warn about
        to_nir(net, profile="sinabs")  # Sinabs runs a NIR IF as this neuron
    with pytest.raises(InputError, match="profile must be one of"):
        to_nir(net, profile="lava")


def test_write_nir_old_schema_and_read_nir_errors(tmp_path):
    import h5py

    net = deployable_net()
    path = write_nir(to_nir(net), tmp_path / "old.nir", schema="1.0.4")
    with h5py.File(path) as f:
        assert all("v_reset" not in f["node"]["nodes"][n] for n in ("if_1", "if_4", "if_7"))
    x = random_frames()
    assert torch.equal(from_nir(read_nir(path)).eval()(x), net.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))
    if "v_reset" in {f.name for f in dataclasses.fields(nir.IF)}:  # nir >= 1.0.5
        graph = to_nir(net)
        graph.nodes["if_1"].v_reset = np.full_like(graph.nodes["if_1"].v_threshold, 0.5)
        with pytest.raises(InputError, match=r"node 'if_1' \(IF\) resets to a non-zero v_reset"):
            write_nir(graph, tmp_path / "bad.nir", schema="1.0.4")
        assert not (tmp_path / "bad.nir").exists()
    # a field this nir does not know (as a 1.0.8 file is to nir 1.0.4): a clear error naming the fix
    newer = write_nir(to_nir(net), tmp_path / "newer.nir")
    with h5py.File(newer, "r+") as f:
        f["node"]["nodes"]["if_1"]["v_future"] = np.zeros(1)
    try:
        nir.read(newer)
    except TypeError:  # nir >= 1.0.5 passes every stored field to the node's constructor
        with pytest.raises(InputError, match=r"newer nir schema.*schema='1.0.4'"):
            read_nir(newer)
    else:  # nir 1.0.4 reads named fields only (the real 1.0.8 file is checked in tests/interop)
        assert "if_1" in read_nir(newer).nodes
