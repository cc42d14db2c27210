"""flexsnn.runtime: the glibc allocator setting and the channels_last layout."""

import os
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


# ---- BufferPool: large buffers reused across steps, never while something still holds them
BIG = (4, 64, 32, 32)  # 1 MiB of float32: at the pool's threshold


def test_buffer_pool_matches_empty_like_and_reuses_a_dropped_buffer():
    pool = runtime.BufferPool()
    for x in (torch.rand(BIG), torch.rand(BIG).contiguous(memory_format=torch.channels_last)):
        a = pool.empty_like(x)
        ref = torch.empty_like(x)
        assert (a.shape, a.stride(), a.dtype, a.device) == (ref.shape, ref.stride(), ref.dtype, ref.device)
        ptr = a.data_ptr()
        del a
        assert pool.empty_like(x).data_ptr() == ptr  # the same memory, handed out again
    assert pool.empty_like(torch.rand(BIG, dtype=torch.float64)).dtype == torch.float64


def test_buffer_pool_never_hands_out_memory_that_is_still_referenced():
    pool = runtime.BufferPool()
    x = torch.rand(BIG)
    a = pool.empty_like(x)
    view = a[1:3]  # a view keeps the storage alive
    del a
    b = pool.empty_like(x)
    assert b.data_ptr() != view.data_ptr() - view.storage_offset() * 4
    # saved by autograd: held by the graph until backward frees it
    w = torch.rand(BIG, requires_grad=True)
    c = pool.empty_like(x).fill_(2.0)
    loss = (w * c).sum()  # mul saves c for the gradient of w
    ptr = c.data_ptr()
    del c
    d = pool.empty_like(x).fill_(3.0)
    assert d.data_ptr() != ptr
    loss.backward()
    assert torch.equal(w.grad, torch.full(BIG, 2.0))  # the saved buffer was not overwritten
    del loss
    assert pool.empty_like(x).data_ptr() == ptr  # the graph is gone: c's block is free again


def test_buffer_pool_a_short_request_reuses_a_longer_block_and_small_ones_bypass_it():
    pool = runtime.BufferPool()
    long = pool.empty_like(torch.rand(10, *BIG[1:]))
    ptr = long.data_ptr()
    del long
    short = pool.empty_like(torch.rand(*BIG))  # T=4 inside the T=10 block
    assert short.data_ptr() == ptr and short.shape == BIG
    assert pool.pooled_bytes() == 10 * 64 * 32 * 32 * 4
    small = torch.rand(3, 5)
    pool.empty_like(small)
    assert pool.pooled_bytes() == 10 * 64 * 32 * 32 * 4  # below min_bytes: plain torch.empty_like
    pool.enabled = False
    del short
    assert pool.empty_like(torch.rand(BIG)).data_ptr() != ptr


def test_buffer_pool_keeps_at_most_max_blocks_free_blocks():
    pool = runtime.BufferPool(max_blocks=3)
    held = [pool.empty_like(torch.rand(BIG)) for _ in range(5)]  # all in use: none can go
    assert len(pool._blocks) == 5
    del held
    for n in range(6, 9):  # new sizes evict the least recently used free blocks
        pool.empty_like(torch.rand(n, *BIG[1:]))
    assert len(pool._blocks) <= 3
    pool.clear()
    assert pool.pooled_bytes() == 0


NEURON_FAULT_PROBE = textwrap.dedent("""
    import resource, sys, torch
    import flexsnn.runtime as r
    from flexsnn.neurons import LIF
    r.STEP_BUFFERS.enabled = sys.argv[1] == "pooled"
    torch.manual_seed(0)
    x = (torch.rand(10, 32, 32, 34, 34) * 1.5).requires_grad_()  # 47 MiB: above glibc's mmap threshold
    lif = LIF()
    def step():
        x.grad = None
        lif(x).sum().backward()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.slow
@pytest.mark.skipif(not runtime.is_glibc(), reason="glibc malloc only")
def test_neuron_buffers_are_not_faulted_in_again_with_glibc_default_settings():
    def faults(mode):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own settings
        run = subprocess.run(
            [sys.executable, "-c", NEURON_FAULT_PROBE, mode], capture_output=True, text=True, check=True, env=env
        )
        return int(run.stdout.split()[-1])

    pooled, fresh = faults("pooled"), faults("fresh")
    pages = 4 * 3 * 47 * 2**20 // 4096  # spikes, membranes and dx: three 47 MiB buffers per step
    assert fresh > pages * 0.9, (pooled, fresh)
    assert pooled < pages * 0.1, (pooled, fresh)


def test_buffer_pool_keeps_inference_mode_blocks_apart():
    pool = runtime.BufferPool()
    with torch.inference_mode():
        a = pool.empty_like(torch.rand(BIG))
        assert a.is_inference()
    del a
    b = pool.empty_like(torch.rand(BIG))  # a training step after an inference-mode evaluation
    assert not b.is_inference()
    w = torch.rand(BIG, requires_grad=True)
    (w * b.fill_(1.0)).sum().backward()  # saving an inference tensor for backward would raise
    assert torch.equal(w.grad, torch.ones(BIG))
