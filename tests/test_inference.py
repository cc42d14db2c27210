"""InferenceRunner: no autograd, same outputs as eager, one compile per distinct config/shape."""

import pytest
import torch
from torch import nn

from flexsnn.errors import CalibrationError, ConfigError, InputError
from flexsnn.inference import InferenceRunner
from flexsnn.neurons import LIF
from flexsnn.staged import staged_from_layers


def tiny_net(bn: bool = False):
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(8, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [LIF(), nn.Linear(6, 5), LIF()]
    return staged_from_layers(layers, [len(layers) - 2], head=nn.Linear(5, 3), input_kind="frames")


def frames(t, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, b, 2, 4, generator=g) * 3


def eager(net, x, cfg):
    with torch.no_grad():
        return net.eval()(x, time_config=cfg)


@pytest.mark.parametrize("compile", [False, True])
def test_outputs_equal_eager_and_carry_no_graph(compile):
    net = tiny_net()
    runner = InferenceRunner(net, time_config=(3, 2), compile=compile)
    x = frames(5)
    out = runner(x)
    assert out.shape == (2, 4, 3)
    assert not out.requires_grad and out.grad_fn is None
    torch.testing.assert_close(out, eager(net, x, (3, 2)))
    torch.testing.assert_close(runner.predict(x), eager(net, x, (3, 2)).mean(0))
    assert out.abs().sum() > 0


def test_compiles_once_per_config_and_shape():
    net = tiny_net()
    runner = InferenceRunner(net, compile=True)
    configs = [(2, 3), (4, 1), (2, 3), (4, 1), (2, 3)]
    seen = []
    for i, cfg in enumerate(configs):
        x = frames(3, seed=i)
        torch.testing.assert_close(runner(x, cfg), eager(net, x, cfg))
        seen.append(runner.compile_count)
    assert seen[0] >= 1
    assert seen[1] > seen[0]  # a new config compiles once
    assert seen[2:] == [seen[1]] * 3  # configs seen before never compile again
    assert len(runner.compiled_keys) == 2
    runner(frames(3, b=6), (2, 3))  # a new batch size is a new shape: one more entry
    assert len(runner.compiled_keys) == 3


def test_default_config_from_model_and_set_time_config():
    net = tiny_net()
    runner = InferenceRunner(net, compile=False)
    x = frames(4)
    assert runner(x).shape[0] == 4  # frames model without a config: the input's T
    runner.set_time_config((2, 6))
    assert runner.time_config == (2, 6)
    assert runner(x).shape[0] == 6


def test_model_is_put_in_eval_and_restored():
    net = tiny_net().train()
    runner = InferenceRunner(net, time_config=2, compile=False)
    assert not net.training
    runner.close()
    assert net.training


def test_stale_batchnorm_raises_calibration_error():
    net = tiny_net(bn=True)
    with pytest.raises(CalibrationError, match="calibrate_bn"):
        InferenceRunner(net, time_config=2, compile=False)(frames(2))


@pytest.mark.parametrize("compile", [False, True])
def test_bad_inputs(compile):
    net = tiny_net()
    runner = InferenceRunner(net, time_config=2, compile=compile)
    with pytest.raises(InputError, match="x"):
        runner([1, 2, 3])
    bad = frames(2)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        runner(bad)
    with pytest.raises(ConfigError, match="time_config"):
        runner(frames(2), (1, 2, 3))
    with pytest.raises(InputError, match="compile"):
        InferenceRunner(net, compile="yes")
    with pytest.raises(InputError, match="model"):
        InferenceRunner("net")


def conv_net():
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(2, 4, 3, padding=1),
        LIF(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        LIF(multi_spike=True),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
        LIF(),
    ]
    return staged_from_layers(layers, [3, 6], head=nn.Linear(5, 3), input_kind="frames")


def test_channels_last_conv_net_compiles_one_graph_per_config_and_matches_eager():
    net = conv_net()
    x = torch.rand(4, 2, 2, 6, 6) * 2
    reference = eager(net, x, (4, 2, 3))
    runner = InferenceRunner(net, compile=True)  # lays the conv weights out channels_last
    assert net.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(runner(x, (4, 2, 3)), reference)
    torch.testing.assert_close(runner(x, (1, 5, 2)), eager(net, x, (1, 5, 2)))
    # one graph per key: no graph break (out= into channels_last slices is not traceable)
    assert runner.compile_count == 2 == len(runner.compiled_keys)


def test_channels_last_can_be_declined():
    net = conv_net()
    InferenceRunner(net, compile=False, channels_last=False)
    assert net.stages[0][0].weight.is_contiguous()


@pytest.mark.parametrize("compile", [False, True])
def test_bf16_autocast_stays_close_to_float32_with_float32_membranes(compile):
    net = conv_net()
    x = torch.rand(4, 8, 2, 6, 6) * 2
    reference = eager(net, x, (4, 2, 3))
    runner = InferenceRunner(net, compile=compile, amp="bf16")
    out = runner(x, (4, 2, 3))
    assert out.dtype == torch.float32
    assert not torch.equal(out, reference)  # really ran in bf16
    # currents rounded to 8 mantissa bits move a few spikes, not the output as a whole
    assert (out - reference).abs().mean() < 0.1 * reference.abs().mean()
    assert runner.compile_count == (1 if compile else 0)


def test_neurons_integrate_in_float32_under_autocast():
    x = torch.full((3, 1, 4), 0.4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes = LIF(decay=1.0)(x)  # IF: 0.4, 0.8, 1.2 -> fires at t = 2
    assert spikes.dtype == torch.float32
    assert spikes[:, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_bad_amp_and_channels_last_arguments():
    with pytest.raises(InputError, match="amp must be one of"):
        InferenceRunner(tiny_net(), amp="int8")
    with pytest.raises(InputError, match="channels_last must be True or False"):
        InferenceRunner(tiny_net(), channels_last="yes")


def test_micro_batches_equal_the_whole_batch_and_are_compile_keys():
    net = tiny_net()
    runner = InferenceRunner(net, time_config=(3, 2), compile=True, micro_batch=3)
    x = frames(5, b=8)
    out = runner(x)
    assert out.shape == (2, 8, 3)
    torch.testing.assert_close(out, eager(net, x, (3, 2)))
    assert sorted(key[1] for key in runner.compiled_keys) == [(5, 2, 2, 4), (5, 3, 2, 4)]  # chunks 3, 3, 2
    runner(frames(5, b=8, seed=1))
    assert len(runner.compiled_keys) == 2  # the same chunk shapes again: no new compile


def test_auto_micro_batch_keeps_the_largest_intermediate_under_the_limit(monkeypatch):
    net = tiny_net()
    # one sample's largest module output at (3, 2): a [3, 1, 8] float32 tensor (the flattened frames) = 96 B
    monkeypatch.setattr("flexsnn.inference.MICRO_BATCH_BYTES", 96 * 4)
    runner = InferenceRunner(net, time_config=(3, 2), compile=True)
    x = frames(3, b=10)
    torch.testing.assert_close(runner(x), eager(net, x, (3, 2)))
    assert sorted(key[1][1] for key in runner.compiled_keys) == [3, 4]  # at most 4: 4 + 3 + 3 samples
    whole = InferenceRunner(net, time_config=(3, 2), compile=True, micro_batch=None)
    whole(x)
    assert [key[1][1] for key in whole.compiled_keys] == [10]


def test_stateful_models_run_whole_batches():
    net = tiny_net()
    net.stateful = True
    runner = InferenceRunner(net, time_config=(3, 2), compile=True, micro_batch=2)
    runner(frames(3, b=6))  # one membrane per batch row is kept between calls: never split
    assert [key[1][1] for key in runner.compiled_keys] == [6]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "all"])
def test_micro_batch_must_be_auto_a_positive_int_or_none(bad):
    with pytest.raises(InputError, match="micro_batch must be 'auto', a positive int or None"):
        InferenceRunner(tiny_net(), micro_batch=bad)
