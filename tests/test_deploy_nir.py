"""NIR export / import of deployable networks: round trips, metadata, defaults, bad graphs."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.deploy import SumPool2d, from_nir, simulate, to_nir
from flexsnn.deploy.nir_export import METADATA_KEY, nir_metadata
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
        nn.Conv2d(2, 4, 3, padding=1, bias=False), deploy_if(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, bias=False), deploy_if(), nn.Flatten(),
        nn.Linear(6 * 3 * 3, 12, bias=False), deploy_if(),
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
    assert [type(graph.nodes[n]).__name__ for n in ["conv2d_0", "if_1", "sumpool2d_2", "conv2d_3", "if_4",
                                                     "flatten_5", "affine_6", "if_7", "affine_8"]] == [
        "Conv2d", "IF", "SumPool2d", "Conv2d", "IF", "Flatten", "Affine", "IF", "Affine"]
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
    assert meta["neurons"]["if_1"] == {"type": "IF", "v_th": 1.0, "decay": 1.0, "reset": "subtract",
                                       "multi_spike": True, "v_min": -1.0, "threshold_rule": "u >= v_th"}
    assert meta["stages"] == [["conv2d_0", "if_1", "sumpool2d_2"], ["conv2d_3", "if_4", "flatten_5", "affine_6", "if_7"]]
    assert meta["head"] == ["affine_8"] and meta["time_config"] == [4, 3] and meta["ttm_mode"] == "hard"
    assert meta["pool_folding"] == {"sumpool2d_2": {"from": "AvgPool2d", "scale": 0.25, "folded_into": "conv2d_3"}}
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    read = nir.read(path)
    assert nir_metadata(read) == meta
    assert nir_metadata(read)["extra"] == {"recipe": "mtt", "epochs": 3}
    back = from_nir(read).eval()
    x = random_frames()
    assert torch.equal(net.eval()(x, time_config=(4, 2)), back(x, time_config=(4, 2)))


def _plain_graph(v_th=0.5, bias=None, extra_node=None):
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(4, 3 * 4 * 4)).astype(np.float32)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=w1, stride=1, padding=0, dilation=1, groups=1,
                           bias=np.zeros(3, np.float32)),
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


def test_graph_without_metadata_uses_deployment_defaults():
    graph = _plain_graph(v_th=0.5)
    assert nir_metadata(graph) is None
    net = from_nir(graph)
    assert net.num_stages == 1 and isinstance(net.head, nn.Linear)
    neuron = net.stages[0][1]
    assert isinstance(neuron, IF)
    assert (neuron.v_th, neuron.reset, neuron.multi_spike, neuron.v_min) == (0.5, "subtract", True, -1.0)
    # hand check of the defaults on one step: conv -> IF(0.5, multi, subtract) -> flatten -> fc
    x = torch.rand(1, 2, 2, 6, 6)
    conv = nn.functional.conv2d(x[0], torch.from_numpy(graph.nodes["conv"].weight))
    u = torch.clamp(conv, min=-1.0)
    spikes = torch.clamp(torch.floor(u / 0.5), min=0)
    expected = spikes.flatten(1) @ torch.from_numpy(graph.nodes["fc"].weight).T
    torch.testing.assert_close(net.eval()(x)[0], expected)


@pytest.mark.parametrize("bad, message", [
    (dict(bias=np.ones(4, np.float32)), "non-zero bias"),
    (dict(extra_node=nir.LI(tau=np.ones(48), r=np.ones(48), v_leak=np.zeros(48))), "LI is not supported"),
])
def test_bad_graphs_raise_clear_errors(bad, message):
    graph = _plain_graph(**bad)
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
    with pytest.raises(InputError, match="fold BatchNorm"):
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
    assert torch.equal(from_nir(nir.read(tmp_path / "net.nir")).eval()(x, time_config=(4, 3)), net(x, time_config=(4, 3)))
