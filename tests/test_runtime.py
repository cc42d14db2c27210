"""flexsnn.runtime: the glibc allocator setting and the channels_last layout."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from flexsnn import runtime
from flexsnn.errors import InputError
from flexsnn.multistep import TimeFirstSequential
from flexsnn.neurons import LIF
from flexsnn.train import TrainOptions

REFAULT_PROBE = textwrap.dedent("""
    import resource, sys, torch
    import flexsnn.runtime as r
    from flexsnn.multistep import TimeFirstSequential
    from flexsnn.neurons import LIF
    tuned = r.tune_cpu_allocator() if sys.argv[1] == "tuned" else False
    torch.manual_seed(0)
    net = TimeFirstSequential(torch.nn.Conv2d(2, 32, 3, padding=1), LIF(), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32 * 17 * 17, 10))
    x = (torch.rand(10, 32, 2, 34, 34) < 0.2).float()  # conv output, spikes, membranes: 47 MiB each,
                                                        # above glibc's largest mmap threshold (32 MiB)
    def step():
        net(x).sum().backward()
    for _ in range(3):                                  # warm-up: the heap reaches its working size
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        step()
    print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _probe(mode: str, env=None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", REFAULT_PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow
@pytest.mark.skipif(not runtime.is_glibc(), reason="glibc malloc only")
def test_tuned_allocator_reuses_freed_large_blocks_without_page_faults():
    tuned, refaults = _probe("tuned")
    default, default_refaults = _probe("default")
    assert tuned == "True" and default == "False"
    pages = 3 * 47 * 2**20 // 4096  # one 47 MiB activation every other step (measured: several per step)
    counts = f"tuned {refaults}, default {default_refaults} page faults in 6 steps"
    assert default_refaults > pages, counts  # glibc default: fresh mmaps, faulted in again
    assert refaults < default_refaults / 3, counts  # tuned: freed heap blocks are reused


def test_opt_out_and_idempotence(monkeypatch):
    monkeypatch.setattr(runtime, "_state", {"tuned": False})
    monkeypatch.setenv(runtime.ENV_OPT_OUT, "default")
    assert runtime.tune_cpu_allocator() is False
    assert runtime.allocator_tuned() is False
    monkeypatch.setattr(runtime, "_state", {"tuned": True})
    assert runtime.tune_cpu_allocator() is True  # already in effect: no second mallopt


def conv_net():
    torch.manual_seed(0)
    return TimeFirstSequential(
        nn.Conv2d(2, 4, 3, padding=1), LIF(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)
    )


def test_use_channels_last_keeps_values_parameters_and_outputs():
    net = conv_net()
    weight = net[0].weight
    before = weight.detach().clone()
    x = torch.rand(3, 2, 2, 6, 6) * 2
    ref = net(x)
    assert runtime.use_channels_last(net) is net
    assert net[0].weight is weight  # same Parameter: an optimizer built before still works
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert torch.equal(weight.detach(), before)
    torch.testing.assert_close(net(x), ref)
    # activations follow the weights through conv and the neuron: [T, B, C, H, W] in CL order
    spikes = net[1](net[0](x.reshape(6, 2, 6, 6)).reshape(3, 2, 4, 6, 6))
    assert spikes.permute(0, 1, 3, 4, 2).is_contiguous()


def test_use_channels_last_leaves_models_without_conv2d_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.Conv1d(2, 2, 3))
    strides = [p.stride() for p in net.parameters()]
    runtime.use_channels_last(net)
    assert [p.stride() for p in net.parameters()] == strides


def test_train_options_channels_last_must_be_bool():
    assert TrainOptions().channels_last is True
    with pytest.raises(InputError, match="channels_last must be True or False"):
        TrainOptions(channels_last="yes")
