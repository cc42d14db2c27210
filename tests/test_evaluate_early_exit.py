"""Early exit: the exit rule, the steps a staged config needs, and equality with fixed-T runs."""

import math

import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flexsnn.errors import InputError
from flexsnn.evaluate import accuracy_at
from flexsnn.evaluate.cost import count_ops
from flexsnn.evaluate.early_exit import (
    early_exit_sweep,
    exit_steps,
    required_steps,
    running_confidence,
)
from flexsnn.neurons import LIF
from flexsnn.staged import StagedNet


def test_running_confidence_by_hand():
    out = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[-2.0, 1.0]]])  # [T=3, B=1, 2]
    conf, pred = running_confidence(out)
    # means: [0, 0] -> 0.5; [1, 0] -> sigmoid(1); [0, 1/3] -> sigmoid(1/3), class 1
    assert conf[:, 0].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-1 / 3))])
    assert pred[:, 0].tolist() == [0, 0, 1]


def test_exit_steps_by_hand():
    conf = torch.tensor([[0.2, 0.9, 0.5], [0.6, 0.1, 0.5], [0.7, 0.95, 0.5]])  # [T=3, B=3]
    assert exit_steps(conf, 0.0).tolist() == [0, 0, 0]
    assert exit_steps(conf, 0.6).tolist() == [1, 0, 2]  # sample 2 never reaches it: last step
    assert exit_steps(conf, 0.92).tolist() == [2, 2, 2]
    assert exit_steps(conf, 1.01).tolist() == [2, 2, 2]
    with pytest.raises(InputError, match="threshold"):
        exit_steps(conf, float("nan"))


def test_required_steps_follow_the_ttm():
    assert required_steps((4, 2)).tolist() == [[2, 4], [1, 2]]  # each output sums 2 inputs
    assert required_steps((5, 3)).tolist()[0] == [2, 3, 5]  # 5->3: in0+in1, in2, in3+in4
    assert required_steps((5, 3), "trim").tolist()[0] == [1, 2, 3]  # keeps the first 3
    assert required_steps((3, 5)).tolist()[0] == [1, 1, 2, 3, 3]  # 3->5 copies in0, in0, in1, in2, in2
    # 2->3 copies in0 to output 0 and in1 to 1, 2 (the edge 1.5 rounds down); 6->2 sums blocks of 3
    assert required_steps((6, 2, 3)).tolist() == [[3, 6, 6], [1, 2, 2], [1, 2, 3]]
    assert required_steps((4, 4, 4)).tolist() == [[1, 2, 3, 4]] * 3


def _static_net():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    fc = nn.Linear(4 * 4 * 4, 8)
    with torch.no_grad():
        conv.weight.mul_(3), fc.weight.mul_(4)
    return StagedNet([[conv, LIF()], [nn.Flatten(), fc, LIF()]], head=nn.Linear(8, 3), input_kind="static")


def _static_loader(n=24):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return DataLoader(TensorDataset(x, torch.arange(n) % 3), batch_size=10)


def test_threshold_zero_is_t1_and_above_one_is_full_t():
    net, loader = _static_net(), _static_loader()
    result = early_exit_sweep(net, loader, 4, thresholds=[0.0, 1.5])
    first, full = result.points
    assert first.avg_t == 1 and full.avg_t == 4
    assert first.accuracy == accuracy_at(net, loader, 1) and full.accuracy == accuracy_at(net, loader, 4)
    ops1, ops4 = count_ops(net, loader, 1), count_ops(net, loader, 4)
    assert first.macs == pytest.approx(ops1.macs, rel=1e-12) and first.acs == pytest.approx(ops1.acs, rel=1e-12)
    assert full.synops == pytest.approx(ops4.synops, rel=1e-12)
    assert first.macs > 0 and first.acs > 0  # the static image costs MACs, spikes cost ACs
    assert full.synops > first.synops


def test_fixed_t_curve_equals_uniform_runs_for_static_input():
    net, loader = _static_net(), _static_loader()
    result = early_exit_sweep(net, loader, 4, thresholds=[0.5])
    for t, point in enumerate(result.fixed, start=1):
        assert point.avg_t == t
        assert point.accuracy == accuracy_at(net, loader, t)
        assert point.synops == pytest.approx(count_ops(net, loader, t).synops, rel=1e-12)


def test_staged_config_exits_on_the_last_stage_axis():
    # config (4, 2): the first output step needs 2 stage-1 steps summed -> equals a run at (2, 1)
    net, loader = _static_net(), _static_loader()
    result = early_exit_sweep(net, loader, (4, 2), thresholds=[0.0, 2.0])
    first, full = result.points
    assert first.accuracy == accuracy_at(net, loader, (2, 1))
    assert first.synops == pytest.approx(count_ops(net, loader, (2, 1)).synops, rel=1e-12)
    assert full.accuracy == accuracy_at(net, loader, (4, 2)) and full.avg_t == 2
    assert full.synops == pytest.approx(count_ops(net, loader, (4, 2)).synops, rel=1e-12)


def test_higher_thresholds_never_exit_earlier():
    net, loader = _static_net(), _static_loader()
    result = early_exit_sweep(net, loader, 5, thresholds=[0.0, 0.4, 0.5, 0.6, 0.8, 0.95, 1.01])
    avg = [p.avg_t for p in result.points]
    ops = [p.synops for p in result.points]
    assert avg == sorted(avg) and ops == sorted(ops)
    assert result.as_dict()["early_exit"][0]["threshold"] == 0.0


def test_bn_frames_model_is_calibrated_and_arguments_are_checked():
    torch.manual_seed(0)
    train, test = make_frame_loaders(t=3)
    model = tiny_staged_net(bn=True)
    with pytest.raises(InputError, match="calib_loader is required"):
        early_exit_sweep(model, test, 3)
    result = early_exit_sweep(model, test, (3, 2), thresholds=[0.0, 2.0], calib_loader=train, calib_batches=2)
    assert model.bn_calibrated_for == (3, 2) and result.samples == 32
    assert result.points[1].accuracy == accuracy_at(model, test, (3, 2))
    with pytest.raises(InputError, match="thresholds is empty"):
        early_exit_sweep(model, test, 3, thresholds=[], calib_loader=train)
