import json
import math

import pytest
import torch
from torch import nn

from flexsnn.errors import CalibrationError, ConfigError, InputError
from flexsnn.models import MODELS, BasicBlock, build_model
from flexsnn.multistep import run_time_first
from flexsnn.neurons import IF, LIF
from flexsnn.staged import StagedNet

# Tiny but complete versions of every zoo model: (kwargs, per-sample input shape, stages, classes)
TINY = {
    "digits_mlp": ({"hidden": [16, 8]}, (2, 34, 34), 2, 10),
    "digits_conv": ({"channels": [4, 8], "hidden": 16}, (2, 34, 34), 3, 10),
    "resnet18": ({"width": 1 / 16}, (3, 16, 16), 8, 10),
    "resnet19": ({"width": 1 / 16, "num_classes": 100}, (3, 16, 16), 8, 100),
    "vgg14": ({"width": 1 / 16}, (3, 32, 32), 13, 10),
    "vgg9_dvs": ({"width": 1 / 16}, (2, 32, 32), 4, 10),
    "nmnist_net": ({}, (2, 34, 34), 2, 10),
    "gesture_net": ({"channels": [4, 4, 8, 8], "hidden": 8, "in_size": 32}, (2, 32, 32), 3, 11),
}
NONUNIFORM = (3, 1, 2, 4, 1, 2, 3, 2, 1, 3, 2, 1, 2)


def _input(net, shape, batch=2, t=3):
    if net.input_kind == "static":
        return torch.rand(batch, *shape)
    return (torch.rand(t, batch, *shape) < 0.3).float()


def test_registry_covers_the_documented_models():
    assert set(MODELS) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_runs_a_nonuniform_config(name):
    torch.manual_seed(0)
    kwargs, shape, stages, classes = TINY[name]
    net = build_model(name, **kwargs)
    assert isinstance(net, StagedNet) and net.num_stages == stages
    cfg = NONUNIFORM[:stages]
    x = _input(net, shape)
    out = net(x, time_config=cfg)  # train mode: no calibration needed
    assert out.shape == (cfg[-1], 2, classes)
    assert torch.isfinite(out).all()
    net.readout(out).sum().backward()
    first_weight = next(p for p in net.parameters() if p.dim() > 1)
    assert first_weight.grad is not None
    net.eval()
    net.mark_calibrated(cfg)
    with torch.no_grad():
        assert net(x, time_config=cfg[::-1]).shape == (cfg[0], 2, classes)


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_spec_round_trips_through_json(name):
    kwargs = TINY[name][0]
    net = build_model(name, **kwargs)
    spec = json.loads(json.dumps(net.model_spec))
    modes = {"ttm_mode": "hard"}
    if net.input_kind == "frames":
        modes["input_ttm_mode"] = "trim" if name == "gesture_net" else "hard"
    assert spec == {"name": name, "kwargs": {**json.loads(json.dumps(kwargs)), **modes}}
    again = build_model(spec["name"], **spec["kwargs"])
    a, b = net.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a)  # strict: the rebuilt model accepts the weights


def test_tuples_are_recorded_as_json_lists():
    net = build_model("digits_mlp", hidden=(16, 8), in_shape=(2, 6, 6), pool=1)
    assert net.model_spec["kwargs"] == {
        "hidden": [16, 8],
        "in_shape": [2, 6, 6],
        "pool": 1,
        "ttm_mode": "hard",
        "input_ttm_mode": "hard",
    }
    assert net.input_shape == (2, 6, 6)


def test_build_model_errors():
    with pytest.raises(InputError, match="unknown model 'resnet50'.*digits_conv.*vgg9_dvs"):
        build_model("resnet50")
    with pytest.raises(InputError, match=r"unknown argument\(s\) \['hiden'\]"):
        build_model("digits_mlp", hiden=[4])
    with pytest.raises(InputError, match="JSON"):
        build_model("digits_mlp", hidden=[torch.tensor(4)])
    with pytest.raises(InputError, match="num_classes"):
        build_model("resnet18", num_classes=0)
    with pytest.raises(InputError, match="width"):
        build_model("resnet19", width=0)
    with pytest.raises(InputError, match="input_kind"):
        build_model("resnet19", width=1 / 16, input_kind="events")
    with pytest.raises(InputError, match="in_shape"):
        build_model("digits_conv", in_shape=[2, 34])
    with pytest.raises(InputError, match="hidden"):
        build_model("digits_mlp", hidden=[])
    with pytest.raises(InputError, match="input_pool"):
        build_model("vgg9_dvs", in_size=130, input_pool=4)
    with pytest.raises(InputError, match="in_size"):
        build_model("gesture_net", in_size=8)


def _neurons(net):
    return [m for m in net.modules() if isinstance(m, (LIF, IF))]


def test_time_stepped_neuron_defaults_and_overrides():
    net = build_model("digits_mlp", hidden=[8, 8])
    lifs = _neurons(net)
    assert len(lifs) == 2 and all(type(n) is LIF for n in lifs)
    assert all((n.v_th, n.decay, n.reset, n.multi_spike) == (1.0, 0.5, "hard", False) for n in lifs)
    assert all(n.surrogate == "triangle" for n in lifs + _neurons(build_model("vgg9_dvs", width=1 / 16)))
    net = build_model("resnet19", width=1 / 16, neuron={"decay": 0.25, "surrogate": "sigmoid"})
    assert all(n.decay == 0.25 and n.v_th == 1.0 and n.surrogate == "sigmoid" for n in _neurons(net))
    assert len({id(n) for n in _neurons(net)}) == len(_neurons(net))  # fresh neuron per layer
    with pytest.raises(InputError, match="neuron"):
        build_model("digits_mlp", neuron={"tau": 2.0})
    with pytest.raises(InputError, match="neuron"):
        build_model("digits_mlp", neuron=[0.5])
    with pytest.raises(InputError, match="decay"):
        build_model("digits_mlp", neuron={"decay": 1.5})


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("nmnist_net", {}),
        ("gesture_net", {"in_size": 64}),
        ("vgg9_dvs", {"width": 1 / 16, "deployable": True}),
    ],
)
def test_deployable_nets_are_bias_free_if_networks(name, kwargs):
    net = build_model(name, **kwargs)
    neurons = _neurons(net)
    assert neurons and all(type(n) is IF for n in neurons)
    assert all((n.v_th, n.reset, n.multi_spike, n.v_min) == (1.0, "subtract", True, -1.0) for n in neurons)
    assert all((n.surrogate, n.alpha) == ("exponential", 0.5) for n in neurons)  # Sinabs' default
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted and all(m.bias is None for m in weighted)
    assert isinstance(net.head, nn.Linear)  # readout: a bias-free Linear, no neuron after it
    pools = [m for m in net.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    assert pools and all(type(m) is nn.AvgPool2d for m in pools)
    # a conv stage is a group of (at most) two conv layers (gesture_net adds an FC stage)
    convs = [sum(isinstance(m, nn.Conv2d) for m in stage) for stage in net.stages]
    assert all(c <= 2 for c in convs) and sum(c == 2 for c in convs) >= 1 and convs[0] >= 1
    x = (torch.rand(4, 1, *net.input_shape) < 0.2).float()
    out = net(x, time_config=(4,) + (2,) * (net.num_stages - 1))
    assert out.shape[:2] == (2, 1)
    neuron_out = []
    hooks = [n.register_forward_hook(lambda m, i, o: neuron_out.append(o)) for n in neurons]
    net(x * 5, time_config=2)
    for h in hooks:
        h.remove()
    assert any(bool((o > 1).any()) for o in neuron_out)  # multi-spike: counts above 1 occur
    assert all(bool((o == o.floor()).all() and (o >= 0).all()) for o in neuron_out)


def test_nmnist_net_has_about_6k_weights():
    net = build_model("nmnist_net")
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [w.shape[0] for w in weights] == [8, 16, 16, 10]  # 3 conv + 1 FC
    assert 5000 <= sum(w.numel() for w in weights) <= 7000


def _count(net):
    return sum(p.numel() for p in net.parameters())


def test_paper_model_parameter_counts():
    assert _count(build_model("gesture_net")) == 48_768  # weights + BN scale/shift (the paper's authors' net)
    assert _count(build_model("resnet19", num_classes=10)) == 12_569_226
    assert build_model("vgg14", width=1 / 16).num_stages == 13
    assert build_model("vgg14", width=1 / 16, convs_per_stage=2).num_stages == 7


def test_gesture_net_is_the_authors_net():
    net = build_model("gesture_net")
    assert net.num_stages == 3 and net.input_shape == (2, 128, 128)
    assert (net.ttm_mode, net.input_ttm_mode) == ("hard", "trim")
    layout = []
    for stage in net.stages:
        row = []
        for m in stage:
            if isinstance(m, nn.Conv2d):
                assert m.kernel_size == (3, 3) and m.padding == (1, 1) and m.bias is None
                row.append(f"conv{m.in_channels}-{m.out_channels}s{m.stride[0]}")
            elif isinstance(m, nn.Linear):
                assert m.bias is None
                row.append(f"fc{m.in_features}-{m.out_features}")
            else:
                row.append({nn.AvgPool2d: "pool", nn.BatchNorm2d: "bn", IF: "if", nn.Flatten: "flat"}[type(m)])
        layout.append(" ".join(row))
    assert layout == [
        "pool conv2-8s2 bn if pool conv8-16s1 bn if",
        "pool conv16-32s1 bn if pool conv32-32s1 bn if",
        "flat fc512-64 if",
    ]
    assert (net.head.in_features, net.head.out_features, net.head.bias) == (64, 11, None)
    # trimmed input: frames after the first T_1 do not reach the net
    torch.manual_seed(0)
    x = (torch.rand(40, 2, 2, 128, 128) < 0.1).float() * 3
    later = x.clone()
    later[5:] = 0
    with torch.no_grad():
        out = net(x, time_config=(5, 3, 4))
        assert torch.equal(out, net(later, time_config=(5, 3, 4)))
        assert torch.equal(out, net(x[:5], time_config=(5, 3, 4)))
    with pytest.raises(InputError, match="channels"):
        build_model("gesture_net", channels=[8, 16, 32])


def test_input_ttm_mode_is_kept_by_a_checkpoint(tmp_path):
    from flexsnn.train import load_model, save_model

    for name, kwargs, mode in [
        ("gesture_net", {"in_size": 32}, "trim"),
        ("digits_conv", {"channels": [4, 8], "hidden": 16, "input_ttm_mode": "trim"}, "trim"),
        ("nmnist_net", {}, "hard"),
    ]:
        net = build_model(name, **kwargs)
        assert net.input_ttm_mode == mode and net.model_spec["kwargs"]["input_ttm_mode"] == mode
        save_model(tmp_path / name, net, {})
        loaded, config = load_model(tmp_path / name)
        assert loaded.input_ttm_mode == mode and config["model"]["kwargs"]["input_ttm_mode"] == mode
    with pytest.raises(InputError, match="input_ttm_mode"):
        build_model("nmnist_net", input_ttm_mode="first")


def test_digits_shapes():
    mlp = build_model("digits_mlp")
    lin = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(578, 256), (256, 128), (128, 10)]
    conv = build_model("digits_conv")
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in convs] == [(2, 16, (2, 2)), (16, 32, (2, 2))]
    assert conv.head.in_features == 128 and conv.head.out_features == 10


def test_resnet_structure_and_grouping():
    r19 = build_model("resnet19", width=1 / 16)
    blocks = [m for m in r19.modules() if isinstance(m, BasicBlock)]
    assert [b.residual[0].out_channels for b in blocks] == [8, 8, 8, 16, 16, 16, 32, 32]
    assert all(len(list(stage.children())) >= 1 for stage in r19.stages)
    assert [sum(isinstance(m, BasicBlock) for m in s) for s in r19.stages] == [1] * 8
    # the authors' head: global pool -> Linear(512 * width, C), no hidden FC + LIF after the pool
    assert [type(m) for m in list(r19.stages[-1])[-2:]] == [nn.AdaptiveAvgPool2d, nn.Flatten]
    assert isinstance(r19.head, nn.Linear) and r19.head.in_features == 32
    r18 = build_model("resnet18", width=1 / 16, group_block_num=3)
    assert [sum(isinstance(m, BasicBlock) for m in s) for s in r18.stages] == [3, 3, 2]
    assert r18.head.in_features == 32
    # downsampling blocks carry a conv1x1 shortcut, the others the identity
    b = [m for m in r18.modules() if isinstance(m, BasicBlock)]
    assert [len(m.shortcut) > 0 for m in b] == [False, False, True, False, True, False, True, False]


def test_resnet_dvs_variant_and_vgg9_input_pool():
    net = build_model("resnet19", width=1 / 16, in_channels=2, input_kind="frames")
    x = (torch.rand(5, 2, 2, 16, 16) < 0.2).float()
    assert net(x, time_config=(3, 1, 2, 1, 1, 2, 2, 4)).shape == (4, 2, 10)
    vgg = build_model("vgg9_dvs", width=1 / 16, in_size=128, input_pool=4)
    assert isinstance(vgg.stages[0][0], nn.AvgPool2d)
    assert vgg.head.in_features == 32 * 2 * 2
    assert vgg(torch.rand(2, 1, 2, 128, 128), time_config=(2, 1, 1, 2)).shape == (2, 1, 10)


def test_zoo_model_errors():
    net = build_model("digits_conv", channels=[4, 8], hidden=16)
    x = torch.rand(3, 4, 2, 34, 34)
    with pytest.raises(ConfigError, match="3 entries"):
        net(x, time_config=(2, 2))
    with pytest.raises(ConfigError, match="time_config"):
        net(x, time_config=(2, 0, 2))
    with pytest.raises(InputError, match=r"\[T, B, 2, 34, 34\]"):
        net(x[0])  # one time step without its T axis
    with pytest.raises(InputError, match=r"\[T, B, 2, 34, 34\]"):
        net(x.transpose(1, 2))  # [T, C, B, ...]
    x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        net(x, time_config=2)
    static = build_model("vgg14", width=1 / 16)
    with pytest.raises(InputError, match=r"\[B, 3, 32, 32\]"):
        static(torch.rand(2, 2, 3, 32, 32), time_config=2)  # frames given to a static model


def test_zoo_calibration_error_cleared_by_mark_calibrated():
    net = build_model("digits_conv", channels=[4, 8], hidden=16).eval()
    x = torch.rand(2, 2, 2, 34, 34)
    with pytest.raises(CalibrationError, match="calibrate_bn"):
        net(x, time_config=2)
    net.mark_calibrated((2, 2, 2))
    assert net(x, time_config=2).shape == (2, 2, 10)


def test_zoo_uniform_config_equals_stages_without_ttm():
    torch.manual_seed(0)
    net = build_model("digits_conv", channels=[4, 8], hidden=16)
    x = (torch.rand(3, 2, 2, 34, 34) < 0.3).float() * 3
    net.eval()
    net.mark_calibrated(3)
    with torch.no_grad():
        out = net(x, time_config=3)
        y = x
        for stage in net.stages:
            y = run_time_first(stage, y)
        ref = net.head(y.reshape(6, -1)).reshape(3, 2, 10)
    assert torch.equal(out, ref)


def test_gesture_net_deploys_and_the_simulator_matches_time_stepped():
    import numpy as np

    from flexsnn.data.events import make_events
    from flexsnn.deploy import EventNet, remove_biases, simulate

    torch.manual_seed(0)
    net = build_model("gesture_net").double()
    remove_biases(net)  # BN folded into the convs, biases gone
    assert not net.has_batchnorm
    kinds = [type(layer).__name__ for layer in EventNet.from_torch(net).layers]
    assert kinds == [
        "SumPool",
        "Conv",
        "SumPool",
        "Conv",
        "SumPool",
        "Conv",
        "SumPool",
        "Conv",
        "Flatten",
        "Linear",
        "Linear",
    ]
    rng = np.random.default_rng(0)
    with torch.no_grad():  # non-negative dyadic weights (exact sums, no FIFO effects) of gain ~ 2 per layer
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                scale = 8 / 2 ** math.ceil(math.log2(m.weight[0].numel()))
                m.weight.copy_(torch.as_tensor(rng.integers(0, 8, size=tuple(m.weight.shape)) * scale))
    n = 40
    xs, ys, ps = rng.integers(48, 80, n), rng.integers(48, 80, n), rng.integers(0, 2, n)
    events = make_events(xs, ys, np.arange(n), ps)
    frames = torch.zeros(n, 1, 2, 128, 128, dtype=torch.float64)  # one event per time step
    frames[torch.arange(n), 0, torch.as_tensor(ps), torch.as_tensor(ys), torch.as_tensor(xs)] = 1.0
    with torch.no_grad():
        stepped = net(frames, time_config=n)  # uniform T = the data's T: every TTM is the identity
    res = simulate(net, events, (128, 128, 2))
    assert (res.layer_spikes[:5] > 0).all()  # activity reaches the FC layer, so the comparison means something
    np.testing.assert_allclose(res.scores, stepped.sum(0)[0].numpy(), rtol=1e-12)
