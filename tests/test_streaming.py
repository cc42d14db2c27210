"""Stateful (streaming) mode: chunks fed one after the other equal one run on the whole stream."""

import pytest
import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.neurons import IF, LIF
from flexsnn.staged import staged_from_layers


@pytest.mark.parametrize(
    "make",
    [
        lambda: LIF(v_th=0.7, decay=0.6, reset="hard"),
        lambda: LIF(v_th=0.5, decay=0.9, reset="subtract", v_min=-0.5),
        lambda: IF(v_th=0.4, multi_spike=True, v_min=-1.0),
        lambda: LIF(v_th=0.6, decay=0.8, backend="reference"),
    ],
)
def test_neuron_chunked_equals_full_bit_exactly(make):
    torch.manual_seed(0)
    x = torch.randn(12, 3, 5) * 0.8
    full = make()
    full.record_membrane = True
    want = full(x)
    layer = make()
    layer.stateful = True
    layer.record_membrane = True
    got = torch.cat([layer(x[:5]), layer(x[5:6]), layer(x[6:])])
    assert torch.equal(got, want)
    assert torch.equal(layer.last_membrane, full.last_membrane)
    assert want.sum() > 0 and (want == 0).any()  # the case exercises both spikes and silence


def test_hand_trace_carries_membrane_and_reset_state_forgets():
    layer = LIF(v_th=1.0, decay=0.5)
    layer.stateful = True
    layer.record_membrane = True
    x = torch.tensor([[[0.8]]])
    assert layer(x).item() == 0.0 and layer.last_membrane.item() == pytest.approx(0.8)
    assert layer(x).item() == 1.0  # 0.5 * 0.8 + 0.8 = 1.2 >= 1
    assert layer.last_membrane.item() == 0.0  # hard reset
    assert layer(x).item() == 0.0 and layer(x).item() == 1.0
    layer.reset_state()
    assert layer(x).item() == 0.0  # starts at 0 again


def test_default_is_stateless():
    layer = LIF(v_th=1.0, decay=0.5)
    x = torch.tensor([[[0.8]]])
    assert [layer(x).item() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert layer.last_membrane is None


def test_batch_change_without_reset_is_refused():
    layer = LIF()
    layer.stateful = True
    layer(torch.ones(2, 3, 4))
    with pytest.raises(InputError, match="reset_state"):
        layer(torch.ones(2, 5, 4))
    layer.reset_state()
    assert layer(torch.ones(2, 5, 4)).shape == (2, 5, 4)


def test_no_gradient_crosses_chunks():
    layer = LIF(v_th=0.5)
    layer.stateful = True
    a = torch.rand(3, 2, 4, requires_grad=True)
    layer(a).sum().backward()
    b = torch.rand(3, 2, 4, requires_grad=True)
    layer(b).sum().backward()  # would fail ("backward through the graph a second time") if the state kept a graph
    assert b.grad is not None


def _net():
    torch.manual_seed(1)
    return staged_from_layers(
        [
            nn.Conv2d(2, 4, 3, padding=1),
            LIF(v_th=0.3),
            nn.Conv2d(4, 4, 3, padding=1),
            IF(v_th=0.5, v_min=-1.0),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
            LIF(v_th=0.2, reset="subtract"),
        ],
        boundaries=[2, 4],
        input_kind="frames",
    )


def test_stagednet_chunked_equals_full_at_uniform_t():
    torch.manual_seed(2)
    x = (torch.rand(12, 2, 2, 6, 6) < 0.3).float()
    net = _net().eval()
    with torch.no_grad():
        net.set_time_config(12)
        want = net(x)
        net.stateful = True
        assert net.stateful
        net.set_time_config(4)
        got = torch.cat([net(x[i : i + 4]) for i in range(0, 12, 4)])
        assert torch.equal(got, want)
        net.reset_state()
        assert torch.equal(net(x[:4]), want[:4])
        net.stateful = False
        assert not net.stateful
        net(x[:4])
        assert torch.equal(net(x[4:8]), net(x[4:8]))  # stateless again: no carry-over
        assert not torch.equal(net(x[4:8]), want[4:8])


@pytest.mark.parametrize("mode, equal", [("hard", True), ("soft", True), ("trim", False)])
def test_stagednet_ttm_changing_t_resamples_each_chunk(mode, equal):
    # 12 -> 6 on the whole stream vs 4 -> 2 per chunk: hard / soft blocks of 2 align with the
    # chunks, so they agree; trim keeps the first steps of each chunk instead of the stream's
    torch.manual_seed(3)
    x = (torch.rand(12, 2, 2, 6, 6) < 0.3).float()
    net = _net().eval()
    net.ttm.mode = mode
    with torch.no_grad():
        net.set_time_config((12, 6, 6))
        want = net(x)
        net.stateful = True
        net.set_time_config((4, 2, 2))
        got = torch.cat([net(x[i : i + 4]) for i in range(0, 12, 4)])
    assert got.shape == want.shape == (6, 2, 3)
    assert torch.equal(got, want) is equal


def test_stateful_flag_is_checked():
    with pytest.raises(InputError, match="stateful"):
        _net().stateful = 1
