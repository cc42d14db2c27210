"""Synaptic-op counting: exact fan-outs and hand-computed counts on tiny nets."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flexsnn.errors import InputError
from flexsnn.evaluate.cost import (
    E_AC_PJ,
    E_MAC_PJ,
    OpCounter,
    accuracy_and_ops,
    conv_fanout_map,
    count_ops,
    energy_pj,
    is_event_valued,
    layer_ops,
)
from flexsnn.neurons import LIF
from flexsnn.staged import StagedNet


def test_conv_fanout_is_exact_at_borders_and_with_stride():
    # 5x5 input, k3 s2 p1 -> 3x3 outputs centred on inputs 0, 2, 4: each axis reaches [1,2,1,2,1] outputs
    axis = torch.tensor([1.0, 2, 1, 2, 1], dtype=torch.float64)
    expected = 2 * torch.outer(axis, axis)  # x out_channels = 2
    assert torch.equal(conv_fanout_map(nn.Conv2d(1, 2, 3, stride=2, padding=1), (5, 5)), expected)
    same = conv_fanout_map(nn.Conv2d(3, 1, 3, padding=1), (4, 4))
    axis = torch.tensor([2.0, 3, 3, 2], dtype=torch.float64)
    assert torch.equal(same, torch.outer(axis, axis))
    # circular padding wraps: every input reaches all 9 outputs around it
    assert torch.equal(
        conv_fanout_map(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), (4, 4)),
        torch.full((4, 4), 9.0, dtype=torch.float64),
    )
    # 1-d, no padding, groups: out_channels / groups per covered output position
    assert conv_fanout_map(nn.Conv1d(4, 6, 3, groups=2), (5,)).tolist() == [3.0, 6.0, 9.0, 6.0, 3.0]


def test_fanout_matches_the_layers_own_connectivity():
    conv = nn.Conv2d(1, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    x = torch.zeros(1, 1, 7, 6, requires_grad=True)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    conv(x).sum().backward()  # d(sum of outputs)/d input = number of (output, weight) pairs reading it
    assert torch.equal(conv_fanout_map(conv, (7, 6)).float(), x.grad[0, 0])


def test_event_inputs_count_accumulates_by_value_real_inputs_count_macs():
    lin = nn.Linear(3, 4)
    event, ops = layer_ops(lin, torch.tensor([[1.0, 0, 2], [0, 0, 0]]))
    assert event and ops.tolist() == [12.0, 0.0]  # (1 + 2) events x 4 outputs
    event, ops = layer_ops(lin, torch.tensor([[0.5, 0, -1], [0, 0.25, 0]]))
    assert not event and ops.tolist() == [8.0, 4.0]  # nonzero inputs x 4 outputs
    assert is_event_valued(torch.tensor([0.0, 3.0])) and not is_event_valued(torch.tensor([1.0, -1.0]))


def _hand_net():
    """Frames [T, B, 1, 3, 3] -> Conv(ones, pad 1) + LIF | Flatten + Linear(9, 3, ones) + LIF, head Linear(3, 2)."""
    conv, fc, head = nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Linear(9, 3, bias=False), nn.Linear(3, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0), fc.weight.fill_(1.0)
    return StagedNet([[conv, LIF()], [nn.Flatten(), fc, LIF()]], head=head, input_kind="frames")


def _hand_sample():
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0  # corner event: fan-out 4
    x[1, 0, 1, 1] = 2.0  # two events at the centre: fan-out 9 each
    return x


def _loader(*samples, labels=None):
    x = torch.stack(samples)  # [N, T, ...] batch-first like the data loaders
    y = torch.zeros(len(samples), dtype=torch.long) if labels is None else torch.tensor(labels)
    return DataLoader(TensorDataset(x, y), batch_size=len(samples))


def test_hand_computed_counts_with_a_summing_ttm():
    # conv: 1*4 + 2*9 = 22 ACs. Conv out t0 = 1 on the top-left 2x2, t1 = 2 everywhere: spikes 4 then 9.
    # config (2, 1): the hard TTM sums both steps -> counts (4 cells of 2, 5 of 1) = 13 events x 3 = 39 ACs;
    # all 3 LIFs fire once -> head 3 x 2 = 6 ACs.
    net = _hand_net()
    counts = count_ops(net, _loader(_hand_sample(), _hand_sample()), (2, 1))
    by_layer = {l.layer: l for l in counts.layers}
    assert by_layer["stages.0.0"].acs == 22 and by_layer["stages.0.0"].time_steps == 2
    assert by_layer["stages.1.1"].acs == 39 and by_layer["stages.1.1"].time_steps == 1
    assert by_layer["head"].acs == 6 and by_layer["head"].input == "events"
    assert (counts.acs, counts.macs, counts.synops, counts.samples) == (67, 0, 67, 2)
    # config (2, 2): same 13 events into fc, but the head now sees 3 spikes at each of 2 steps
    assert count_ops(net, _loader(_hand_sample()), (2, 2)).synops == 22 + 39 + 12


def test_counts_are_per_sample_not_per_row():
    net = _hand_net()
    counts = count_ops(net, _loader(_hand_sample(), torch.zeros(2, 1, 3, 3)), (2, 1))
    assert counts.synops == pytest.approx(67 / 2)  # the silent sample costs nothing


def test_static_input_counts_macs_once_per_time_step():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    net = StagedNet([[conv, LIF()]], head=[nn.Flatten(), nn.Linear(9, 2)], input_kind="static")
    img = torch.zeros(1, 3, 3)
    img[0, 0, 0], img[0, 1, 1] = 0.5, -0.25  # real values: corner (fan-out 4) + centre (9)
    counts = count_ops(net, _loader(img), 3)
    conv_ops = next(l for l in counts.layers if l.layer == "stages.0.0")
    assert conv_ops.input == "real" and conv_ops.macs == 3 * 13 and conv_ops.acs == 0


def test_energy_estimate_uses_the_documented_45nm_figures():
    assert (E_AC_PJ, E_MAC_PJ) == (0.9, 4.6)
    assert energy_pj(10, 2) == pytest.approx(10 * 0.9 + 2 * 4.6)
    counts = count_ops(_hand_net(), _loader(_hand_sample()), (2, 1))
    assert counts.energy_pj() == pytest.approx(67 * 0.9)
    assert counts.as_dict()["energy_pj_estimate"] == pytest.approx(67 * 0.9)


def test_accuracy_and_ops_agree_with_separate_measurements():
    torch.manual_seed(0)
    net = StagedNet([[nn.Flatten(), nn.Linear(9, 8), LIF()]], head=nn.Linear(8, 2), input_kind="frames")
    x = (torch.rand(6, 3, 1, 3, 3) < 0.5).float() * 3
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 1, 0, 1, 0, 1])), batch_size=4)
    acc, counts = accuracy_and_ops(net, loader, 3)
    from flexsnn.evaluate import accuracy_at

    assert acc == accuracy_at(net, loader, 3)
    assert counts.samples == 6
    assert counts.layers[0].acs == pytest.approx(float(x.sum()) / 6 * 8)


def test_counter_errors_are_clear():
    with pytest.raises(InputError, match="no Conv/Linear"):
        OpCounter(nn.Sequential(nn.ReLU()))
    net = _hand_net()
    with OpCounter(net), pytest.raises(InputError, match="start_batch"):
        net(_hand_sample().unsqueeze(1))
    assert not net.stages[0][0]._forward_hooks  # hooks are removed on exit
    with pytest.raises(InputError, match="spatial"):
        conv_fanout_map(nn.Conv2d(1, 1, 3), (4,))
    with pytest.raises(InputError, match="non-empty"):
        count_ops(net, [], 2)
