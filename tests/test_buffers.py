"""flexsnn.buffers: large buffers reused across steps, never while something still holds them."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from flexsnn import buffers, runtime

BIG = (4, 64, 32, 32)  # 1 MiB of float32: at the pool's threshold


def test_buffer_pool_matches_empty_like_and_reuses_a_dropped_buffer():
    pool = buffers.BufferPool()
    for x in (torch.rand(BIG), torch.rand(BIG).contiguous(memory_format=torch.channels_last)):
        a = pool.empty_like(x)
        ref = torch.empty_like(x)
        assert (a.shape, a.stride(), a.dtype, a.device) == (ref.shape, ref.stride(), ref.dtype, ref.device)
        ptr = a.data_ptr()
        del a
        assert pool.empty_like(x).data_ptr() == ptr  # the same memory, handed out again
    assert pool.empty_like(torch.rand(BIG, dtype=torch.float64)).dtype == torch.float64


def test_buffer_pool_never_hands_out_memory_that_is_still_referenced():
    pool = buffers.BufferPool()
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
    pool = buffers.BufferPool()
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
    pool = buffers.BufferPool(max_blocks=3)
    held = [pool.empty_like(torch.rand(BIG)) for _ in range(5)]  # all in use: none can go
    assert len(pool._blocks) == 5
    del held
    for n in range(6, 9):  # new sizes evict the least recently used free blocks
        pool.empty_like(torch.rand(n, *BIG[1:]))
    assert len(pool._blocks) <= 3
    pool.clear()
    assert pool.pooled_bytes() == 0


def test_buffer_pool_evicts_a_free_block_that_is_not_first_in_its_list():
    # The first block is used again, so the least recently used free block is the second:
    # dropping it must not compare it with the first block's tensor.
    mib = 1 << 20
    pool = buffers.BufferPool(max_blocks=2)
    pool.empty_like(torch.empty(1, mib // 4))  # block A, 1 MiB
    pool.empty_like(torch.empty(2, mib // 4))  # block B, 2 MiB (A is too small)
    pool.empty_like(torch.empty(1, mib // 4))  # A again: B is now the least recently used
    held = pool.empty_like(torch.empty(3, mib // 4))  # a third block: B goes, A stays
    assert [b[0].numel() * 4 // mib for b in pool._blocks] == [1, 3]
    again = pool.empty_like(torch.empty(1, mib // 4))
    assert pool.pooled_bytes() == 4 * mib and again.numel() == mib // 4 and held.numel() == 3 * mib // 4


NEURON_FAULT_PROBE = textwrap.dedent("""
    import resource, sys, torch
    import flexsnn.buffers as b
    from flexsnn.neurons import LIF
    b.STEP_BUFFERS.enabled = sys.argv[1] == "pooled"
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
    pool = buffers.BufferPool()
    with torch.inference_mode():
        a = pool.empty_like(torch.rand(BIG))
        assert a.is_inference()
    del a
    b = pool.empty_like(torch.rand(BIG))  # a training step after an inference-mode evaluation
    assert not b.is_inference()
    w = torch.rand(BIG, requires_grad=True)
    (w * b.fill_(1.0)).sum().backward()  # saving an inference tensor for backward would raise
    assert torch.equal(w.grad, torch.ones(BIG))


def test_buffer_pool_drops_free_blocks_beyond_max_free_bytes():
    mib = 1 << 20
    pool = buffers.BufferPool(max_free_bytes=3 * mib)
    for n in range(1, 5):  # 1, 2, 3, 4 MiB blocks, each let go of at once
        pool.empty_like(torch.empty(n, mib // 4))
    # before the 4 MiB block the free 1 + 2 + 3 MiB were over budget: the 1 and 2 MiB (least
    # recently used) went, the 3 MiB one stayed
    assert sorted(b[0].numel() * 4 // mib for b in pool._blocks) == [3, 4]
    held = pool.empty_like(torch.empty(4, mib // 4))  # the free 4 MiB block again: no new memory
    assert pool.pooled_bytes() == 7 * mib and held.numel() == mib
