import pytest
import torch
from torch import nn

from flexsnn.errors import CalibrationError, ConfigError, InputError
from flexsnn.multistep import MultiStepModule, TimeFirstSequential, run_time_first
from flexsnn.neurons import LIF
from flexsnn.staged import StagedNet, normalize_time_config, stage_time_steps, staged_from_layers
from flexsnn.temporal import ttm


class Recorder(MultiStepModule):
    """Passes x through unchanged and remembers what it saw (time-first)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x


def _recorder_net(num_stages=3, **kw):
    recs = [Recorder() for _ in range(num_stages)]
    return StagedNet([[r] for r in recs], **kw), recs


# ---- normalize_time_config -------------------------------------------------------------------


def test_normalize_time_config():
    assert normalize_time_config(3, 4) == (3, 3, 3, 3)
    assert normalize_time_config([3, 1, 2], 3) == (3, 1, 2)
    assert normalize_time_config((5,), 1) == (5,)
    out = normalize_time_config([torch.tensor(2).item(), 4], 2)
    assert out == (2, 4) and all(type(v) is int for v in out)


@pytest.mark.parametrize(
    "bad,match",
    [
        ((3, 1), "3 entries"),
        ([1, 2, 3, 4], "3 entries"),
        (0, "time_config"),
        ((1, 0, 2), "time_config"),
        ((1, -2, 2), "time_config"),
        ((1, 2.0, 2), "time_config"),
        (True, "time_config"),
        ("123", "time_config"),
        (None, "time_config"),
        (2.5, "time_config"),
        ((1, True, 2), "time_config"),
    ],
)
def test_normalize_time_config_rejects(bad, match):
    with pytest.raises(ConfigError, match=match):
        normalize_time_config(bad, 3)


# ---- forward semantics -----------------------------------------------------------------------


def test_frames_each_stage_runs_at_its_t_with_hard_ttms_between():
    net, recs = _recorder_net(3, input_kind="frames")
    x = torch.rand(4, 2, 5)
    out = net(x, time_config=(3, 1, 2))
    s1 = ttm(x, 3)
    s2 = ttm(s1, 1)
    s3 = ttm(s2, 2)
    assert [r.seen[0].shape[0] for r in recs] == [3, 1, 2]
    assert torch.equal(recs[0].seen[0], s1) and torch.equal(recs[1].seen[0], s2) and torch.equal(out, s3)
    # hand check of the first TTM (4 -> 3: blocks [0,1), [1,3), [3,4); round(4/3)=1, round(8/3)=3)
    assert torch.equal(s1[1], x[1] + x[2])


def test_static_input_is_repeated_t1_times():
    net, recs = _recorder_net(2, input_kind="static")
    x = torch.rand(3, 4)
    out = net(x, time_config=(4, 2))
    seen = recs[0].seen[0]
    assert seen.shape == (4, 3, 4) and all(torch.equal(seen[t], x) for t in range(4))
    assert torch.equal(out, ttm(seen, 2))  # 4 -> 2 sums pairs: 2x


def test_ttm_mode_is_used_between_stages_and_at_the_input():
    net, recs = _recorder_net(2, input_kind="frames", ttm_mode="soft")
    x = torch.rand(5, 2, 3)
    out = net(x, time_config=(3, 2))
    assert torch.allclose(recs[0].seen[0], ttm(x, 3, "soft"))
    assert torch.allclose(out, ttm(ttm(x, 3, "soft"), 2, "soft"))
    assert net.ttm_mode == "soft"


def test_input_ttm_trim_keeps_the_first_t1_frames_and_stage_boundaries_stay_hard():
    net, recs = _recorder_net(3, input_kind="frames", input_ttm_mode="trim")
    assert (net.ttm_mode, net.input_ttm_mode) == ("hard", "trim")
    x = torch.arange(1.0, 11.0).reshape(10, 1, 1)  # frame t holds the value t + 1
    out = net(x, time_config=(3, 2, 4))
    assert recs[0].seen[0].flatten().tolist() == [1.0, 2.0, 3.0]  # the first 3 of 10 frames, not block sums
    assert recs[1].seen[0].flatten().tolist() == [1.0, 5.0]  # hard 3 -> 2: in0, in1 + in2 (edge 1.5 -> 1)
    assert recs[2].seen[0].flatten().tolist() == [1.0, 1.0, 5.0, 5.0]  # hard 2 -> 4 copies
    assert out.flatten().tolist() == [1.0, 1.0, 5.0, 5.0]
    # upsampling at the input (trim copies like hard): 2 frames -> T_1 = 3 gives in0, in1, in1
    net(torch.tensor([[[1.0]], [[2.0]]]), time_config=(3, 3, 3))
    assert recs[0].seen[1].flatten().tolist() == [1.0, 2.0, 2.0]
    # the default input TTM is hard like the stages: 10 -> 3 sums blocks [0,3), [3,7), [7,10)
    hard, hard_recs = _recorder_net(1, input_kind="frames")
    assert hard.input_ttm_mode == "hard"
    hard(x, time_config=(3,))
    assert hard_recs[0].seen[0].flatten().tolist() == [6.0, 22.0, 27.0]
    assert "input_ttm_mode='trim'" in repr(net) and "ttm_mode='hard'" in repr(net)


def test_input_ttm_mode_defaults_to_ttm_mode_and_is_validated():
    assert StagedNet([[Recorder()]], ttm_mode="soft", input_kind="frames").input_ttm_mode == "soft"
    assert StagedNet([[Recorder()]], ttm_mode="soft", input_ttm_mode="hard").input_ttm_mode == "hard"
    with pytest.raises(InputError, match="input_ttm_mode"):
        StagedNet([[Recorder()]], input_kind="frames", input_ttm_mode="first")


def test_time_config_set_vs_per_call_and_defaults():
    net, recs = _recorder_net(2, input_kind="frames")
    x = torch.rand(5, 1, 2)
    assert net.time_config is None
    assert net(x).shape[0] == 5  # frames without a config: every stage at the input's T
    net.set_time_config(3)
    assert net.time_config == (3, 3)
    assert net(x, time_config=(2, 4)).shape[0] == 4
    assert net.time_config == (3, 3)  # a per-call config does not stick
    assert net(x).shape[0] == 3
    net.time_config = [1, 6]
    assert net(x).shape[0] == 6
    static, _ = _recorder_net(2, input_kind="static")
    with pytest.raises(ConfigError, match="time_config"):
        static(torch.rand(2, 3))
    with pytest.raises(ConfigError, match="2 entries"):
        net.set_time_config((1, 2, 3))
    with pytest.raises(ConfigError, match="2 entries"):
        net(x, time_config=(1, 2, 3))
    with pytest.raises(ConfigError, match="time_config"):
        net(x, time_config=(1, 0))
    assert StagedNet([[Recorder()], [Recorder()]], time_config=(2, 5)).time_config == (2, 5)


def test_heads_plain_list_and_multistep():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.rand(4, 5, 3)
    plain = StagedNet([[Recorder()]], head=lin, input_kind="frames")
    expected = lin(x.reshape(20, 3)).reshape(4, 5, 2)
    assert torch.allclose(plain(x), expected)
    lif = LIF()
    as_list = StagedNet([[Recorder()]], head=[lin, lif], input_kind="frames")
    assert isinstance(as_list.head, TimeFirstSequential)
    assert torch.equal(as_list(x), lif(expected))
    rec = Recorder()
    ms = StagedNet([[Recorder()]], head=rec, input_kind="frames")
    ms(x)
    assert rec.seen[0].shape == (4, 5, 3)


def test_uniform_config_equals_stages_without_ttm():
    torch.manual_seed(0)
    stages = [
        [nn.Flatten(), nn.Linear(12, 8), LIF()],
        nn.Sequential(nn.Linear(8, 8), LIF(decay=0.25)),
    ]
    head = nn.Linear(8, 3)
    net = StagedNet(stages, head=head, input_kind="frames")
    x = torch.rand(4, 6, 3, 4) * 2
    out = net(x, time_config=4)
    y = run_time_first(net.stages[0], x)
    y = run_time_first(net.stages[1], y)
    ref = head(y.reshape(24, 8)).reshape(4, 6, 3)
    assert torch.equal(out, ref)
    assert y.abs().sum() > 0  # spikes did happen, so the comparison is not trivial


def test_gradients_flow_through_ttms():
    torch.manual_seed(0)
    first = nn.Linear(4, 8)
    net = StagedNet(
        [[first, LIF(v_th=0.5)], [nn.Linear(8, 8), LIF(v_th=0.5)]], head=nn.Linear(8, 2), input_kind="frames"
    )
    x = torch.rand(5, 3, 4) * 2
    out = net(x, time_config=(3, 2))
    assert out.shape == (2, 3, 2)
    net.readout(out).sum().backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_readout_is_time_mean():
    out = torch.rand(3, 2, 4)
    assert torch.equal(StagedNet.readout(out), out.mean(0))


def test_sequential_stage_keeps_state_dict_keys():
    seq = nn.Sequential(nn.Linear(2, 3), LIF())
    net = StagedNet([seq, [nn.Linear(3, 3)]])
    keys = set(net.state_dict())
    assert {"stages.0.0.weight", "stages.0.0.bias", "stages.1.0.weight"} <= keys
    assert not any(k.startswith("ttm") for k in keys)
    assert net.stages[0][0] is seq[0]


def test_constructor_validation():
    with pytest.raises(InputError, match="stages"):
        StagedNet([])
    with pytest.raises(InputError, match="stages"):
        StagedNet(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(InputError, match=r"stages\[0\]\[1\]"):
        StagedNet([[nn.Linear(2, 2), "relu"]])
    with pytest.raises(InputError, match="ttm_mode"):
        StagedNet([[nn.Linear(2, 2)]], ttm_mode="linear")
    with pytest.raises(InputError, match="input_kind"):
        StagedNet([[nn.Linear(2, 2)]], input_kind="events")
    with pytest.raises(InputError, match="head"):
        StagedNet([[nn.Linear(2, 2)]], head="linear")


# ---- input validation ------------------------------------------------------------------------


def test_input_layout_and_nan_errors():
    net, _ = _recorder_net(2, input_kind="frames", input_shape=(2, 4, 4))
    with pytest.raises(InputError, match=r"\[T, B, 2, 4, 4\]"):
        net(torch.rand(3, 2, 4, 4))  # a static batch given to a frames model
    with pytest.raises(InputError, match=r"\[T, B, 2, 4, 4\]"):
        net(torch.rand(3, 5, 3, 4, 4))  # wrong channel count
    with pytest.raises(InputError, match="NaN"):
        x = torch.rand(3, 2, 2, 4, 4)
        x[1, 0, 0, 0, 0] = float("nan")
        net(x)
    with pytest.raises(InputError, match="torch.Tensor"):
        net([[1.0]])
    with pytest.raises(InputError, match="empty"):
        net(torch.rand(0, 2, 2, 4, 4))
    free = StagedNet([[Recorder()]], input_kind="static", input_shape=(3, None, None), time_config=2)
    assert free(torch.rand(2, 3, 7, 5)).shape == (2, 2, 3, 7, 5)
    with pytest.raises(InputError, match=r"\[B, 3, \*, \*\]"):
        free(torch.rand(2, 2, 7, 5))
    with pytest.raises(InputError, match="static"):
        StagedNet([[Recorder()]], input_kind="static", time_config=1)(torch.rand(5))
    with pytest.raises(InputError, match=r"\[T, B, \.\.\.\]"):
        StagedNet([[Recorder()]], input_kind="frames")(torch.rand(5, 3))
    ints = net(torch.ones(2, 1, 2, 4, 4, dtype=torch.int64))
    assert ints.dtype == torch.get_default_dtype()


# ---- BatchNorm bookkeeping -------------------------------------------------------------------


def _bn_net():
    return StagedNet(
        [[nn.Linear(4, 6), nn.BatchNorm1d(6), LIF()], [nn.Linear(6, 6), LIF()]],
        head=nn.Linear(6, 2),
        input_kind="frames",
    )


def test_calibration_error_until_marked():
    net = _bn_net()
    x = torch.rand(3, 5, 4)
    assert net.has_batchnorm and net.require_calibration and net.bn_calibrated_for is None
    net.eval()
    with pytest.raises(CalibrationError, match=r"calibrate_bn\(model, loader, time_config\)") as err:
        net(x, time_config=2)
    assert "require_calibration = False" in str(err.value)
    net.mark_calibrated(3)
    assert net.bn_calibrated_for == (3, 3)
    assert net(x, time_config=(2, 1)).shape == (1, 5, 2)  # calibrated stats are used at any config
    net.train()
    net(x, time_config=2)
    assert net.bn_calibrated_for is None  # a train-mode forward makes the stats stale
    net.eval()
    with pytest.raises(CalibrationError):
        net(x, time_config=2)
    net.require_calibration = False
    assert net(x, time_config=2).shape == (2, 5, 2)
    with pytest.raises(ConfigError, match="time_config"):
        net.mark_calibrated((1, 2, 3))


def test_no_calibration_needed_without_tracked_batchnorm():
    plain = StagedNet([[nn.Linear(4, 6), LIF()]], head=nn.Linear(6, 2), input_kind="frames").eval()
    assert not plain.has_batchnorm
    assert plain(torch.rand(2, 3, 4)).shape == (2, 3, 2)
    untracked = StagedNet(
        [[nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False), LIF()]], input_kind="frames"
    ).eval()
    assert not untracked.has_batchnorm
    untracked(torch.rand(2, 3, 4))


def test_train_bn_net_with_calibrate_bn():
    from torch.utils.data import DataLoader, TensorDataset

    from flexsnn.train import calibrate_bn

    net = _bn_net()
    loader = DataLoader(TensorDataset(torch.rand(8, 3, 4), torch.zeros(8, dtype=torch.long)), batch_size=4)
    calibrate_bn(net, loader, (3, 2), num_batches=2)
    assert net.bn_calibrated_for == (3, 2)
    net.eval()
    assert net(torch.rand(3, 2, 4), time_config=(3, 2)).shape == (2, 2, 2)


# ---- staged_from_layers / stage_time_steps ---------------------------------------------------


def test_staged_from_layers_splits_at_boundaries():
    layers = [nn.Linear(2, 2) for _ in range(7)]
    net = staged_from_layers(layers, [3, 6], input_kind="frames", ttm_mode="trim")
    assert [len(s) for s in net.stages] == [3, 3, 1]
    assert [m for s in net.stages for m in s] == layers  # same objects, same order
    assert net.input_kind == "frames" and net.ttm_mode == "trim"
    one = staged_from_layers(nn.Sequential(*layers[:2]), [])
    assert one.num_stages == 1 and len(one.stages[0]) == 2
    head = nn.Linear(2, 5)
    assert staged_from_layers(layers, [1], head=head).head is head


@pytest.mark.parametrize("bounds", [[0], [7], [3, 3], [5, 2], [-1], [2.5], [8]])
def test_staged_from_layers_rejects_bad_boundaries(bounds):
    layers = [nn.Linear(2, 2) for _ in range(7)]
    with pytest.raises(InputError, match="boundaries"):
        staged_from_layers(layers, bounds)


def test_staged_from_layers_rejects_empty():
    with pytest.raises(InputError, match="layers"):
        staged_from_layers([], [])


def test_stage_time_steps():
    net, _ = _recorder_net(3)
    with pytest.raises(ConfigError, match="time_config"):
        stage_time_steps(net)
    net.set_time_config((4, 1, 2))
    assert stage_time_steps(net) == [(0, 4), (1, 1), (2, 2)]
    assert stage_time_steps(net, 2) == [(0, 2), (1, 2), (2, 2)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    net = StagedNet([[nn.Linear(4, 8), LIF()], [nn.Linear(8, 8), LIF()]], head=nn.Linear(8, 2), input_kind="frames")
    x = torch.rand(5, 3, 4) * 2
    ref = net(x, time_config=(3, 2))
    out = net.cuda()(x.cuda(), time_config=(3, 2))
    assert out.device.type == "cuda" and torch.allclose(out.cpu(), ref, atol=1e-5)


# ---- an up-sampling TTM follows a stage's leading per-step layers ----------------------------
def _upsampling_net(ttm_mode="hard", lead=None):
    torch.manual_seed(0)
    second = [*(lead or [nn.Conv2d(3, 4, 3, padding=1)]), nn.BatchNorm2d(4), LIF(v_th=0.3)]
    third = [nn.Flatten(), nn.Linear(4 * 25, 6), nn.BatchNorm1d(6), LIF(v_th=0.2)]
    return StagedNet(
        [[nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), LIF(v_th=0.3)], second, third],
        head=nn.Linear(6, 3),
        ttm_mode=ttm_mode,
        input_kind="frames",
    )


def _layer_steps(monkeypatch):
    """(layer type, T) of every plain layer the stages run time-first, spied on without a hook
    (a hook turns the reordering off)."""
    import flexsnn.multistep as multistep

    seen = []
    apply_flat = multistep.apply_flat

    def spy(module, x):
        seen.append((type(module).__name__, x.shape[0]))
        return apply_flat(module, x)

    monkeypatch.setattr(multistep, "apply_flat", spy)
    return seen


def _forward_backward(net, x, cfg, reorder, monkeypatch):
    import copy

    net = copy.deepcopy(net)
    if not reorder:
        monkeypatch.setattr(StagedNet, "_steps_before_repeat", lambda self, i: 0)
    out = net(x, cfg)
    (out.square().mean() + out.mean()).backward()
    monkeypatch.undo()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return out.detach(), grads, dict(net.named_buffers())


@pytest.mark.parametrize("ttm_mode", ["hard", "trim"])
@pytest.mark.parametrize("cfg", [(2, 5, 7), (3, 7, 2), (4, 1, 3), (1, 2, 3)])
def test_upsampling_ttm_after_the_per_step_layers_gives_the_same_training(ttm_mode, cfg, monkeypatch):
    net = _upsampling_net(ttm_mode)
    x = (torch.rand(6, 5, 2, 7, 7) < 0.4).float()
    out, grads, buffers = _forward_backward(net, x, cfg, True, monkeypatch)
    ref_out, ref_grads, ref_buffers = _forward_backward(net, x, cfg, False, monkeypatch)
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for name, g in ref_grads.items():
        assert g.abs().sum() > 0, name  # every layer learns, so the comparison is not trivial
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    for name, b in ref_buffers.items():  # BatchNorm statistics over the copied steps
        torch.testing.assert_close(buffers[name], b, rtol=1e-5, atol=1e-7, msg=name)


def test_the_layers_before_an_upsampling_run_at_the_stage_before_s_t(monkeypatch):
    net = _upsampling_net()
    x = (torch.rand(6, 5, 2, 7, 7) < 0.4).float()
    seen = _layer_steps(monkeypatch)
    net(x, (2, 5, 7))
    assert seen == [
        ("Conv2d", 2), ("BatchNorm2d", 2),  # stage 1 at T_1 = 2 (the input TTM sums frames: first)
        ("Conv2d", 2), ("BatchNorm2d", 5),  # 2 -> 5: the conv runs on the 2 distinct steps
        ("Flatten", 5), ("Linear", 5), ("BatchNorm1d", 7),  # 5 -> 7
    ]  # fmt: skip
    seen.clear()
    net(x, (3, 2, 2))  # down-sampling and equal T: every layer at its stage's T
    assert [t for _, t in seen] == [3, 3, 2, 2, 2, 2, 2]
    seen.clear()
    net.eval()
    net.require_calibration = False
    with torch.no_grad():
        net(x, (2, 5, 7))  # eval-mode BatchNorm normalises each sample alone: it runs before the copies too
    assert [t for _, t in seen] == [2, 2, 2, 2, 5, 5, 5]


def test_no_reordering_where_copies_could_differ_or_someone_watches(monkeypatch):
    x = (torch.rand(6, 5, 2, 7, 7) < 0.4).float()

    def second_conv_steps(net):
        seen = _layer_steps(monkeypatch)
        net(x, (2, 5, 5))
        monkeypatch.undo()
        return [t for name, t in seen if name in ("Conv2d", "MyConv", "Dropout")][1]

    assert second_conv_steps(_upsampling_net()) == 2
    assert second_conv_steps(_upsampling_net("soft")) == 5  # soft copies nothing: it mixes steps

    class MyConv(nn.Conv2d):  # a subclass may add state or randomness
        pass

    assert second_conv_steps(_upsampling_net(lead=[MyConv(3, 4, 3, padding=1)])) == 5
    dropout_first = [nn.Dropout(0.5), nn.Conv2d(3, 4, 3, padding=1)]
    assert second_conv_steps(_upsampling_net(lead=dropout_first)) == 5  # fresh masks per step
    for watched in ("conv", "stage", "ttm"):
        net = _upsampling_net()
        module = {"conv": net.stages[1][0], "stage": net.stages[1], "ttm": net.ttm}[watched]
        handle = module.register_forward_hook(lambda m, args, out: None)
        assert second_conv_steps(net) == 5, watched
        handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, args, out: None)
    try:
        assert second_conv_steps(_upsampling_net()) == 5  # a global hook may count every forward
    finally:
        handle.remove()
