"""Distributed data-parallel training on CPU with 2 gloo processes (launched by torchrun).

A DDP run over 2 ranks must equal a single process on the same global batches: gradients
and final weights (float tolerance), the TimeConfigs drawn (identical on every rank), the
logged losses, and the BN statistics of the synced calibration. Only the last of the s
backward passes of an MTT iteration may all-reduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_train_loop import NoisyFrames, TinyStaged
from torch.utils.data import DataLoader, DistributedSampler

from flexsnn.errors import ConfigError
from flexsnn.train.bn_calibration import calibrate_bn
from flexsnn.train.distributed import (
    DistInfo,
    all_reduce_sums,
    calibrate_bn_synced,
    distributed_loader,
    init_distributed,
    per_rank_batch_size,
    wrap_ddp,
)
from flexsnn.train.loop import TrainOptions, fit
from flexsnn.train.samplers import MTTSampler

TESTS = Path(__file__).resolve().parent
GLOBAL_BATCH, SEED, N = 8, 3, 48  # 6 global steps per epoch
OPTS = dict(epochs=2, lr=0.2, seed=5)
CALIB_CONFIG, CALIB_BATCHES = (2, 3), 3

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from safetensors.torch import save_file
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from flexsnn.train.distributed import (calibrate_bn_synced, cleanup_distributed, distributed_loader,
                                           init_distributed, wrap_ddp)
    from flexsnn.train.loop import TrainOptions, fit
    from flexsnn.train.samplers import MTTSampler
    from test_train_loop import NoisyFrames, TinyStaged

    out = sys.argv[1]
    info = init_distributed("cpu")
    ds = NoisyFrames(n={n}, noise=0.0)

    class Recording:
        def __init__(self, inner):
            self.inner, self.log = inner, []
        def sample(self, rng, num_stages):
            cfgs = self.inner.sample(rng, num_stages)
            self.log.append([list(c) for c in cfgs])
            return cfgs
        def describe(self):
            return self.inner.describe()

    torch.manual_seed(0)
    net = wrap_ddp(TinyStaged(), info)
    calls = [0]
    def counting_hook(state, bucket):
        calls[0] += 1
        return allreduce_hook(state, bucket)
    net.register_comm_hook(None, counting_hook)
    sampler = Recording(MTTSampler(1, 3, sample_num=3))
    loader = distributed_loader(ds, info, batch_size={batch}, seed={seed})
    hist = fit(net, loader, sampler, TrainOptions(**{opts!r}), progress=False)

    torch.manual_seed(1)
    bn_model = TinyStaged(bn=True)
    calibrate_bn_synced(bn_model, distributed_loader(ds, info, batch_size={batch}, seed={seed}),
                        {calib_config!r}, num_batches={calib_batches})
    # the same run, interrupted mid-epoch 2 (last checkpoint after global step 10) and resumed
    from torch.utils.data import DistributedSampler
    from flexsnn.train.distributed import barrier
    from test_train_resume import Interrupted, StopAfter

    def ddp_fit(stop_after, resume):
        torch.manual_seed(0)
        ddp = wrap_ddp(TinyStaged(), info)
        ld = StopAfter(ds, batch_size={batch} // 2, stop_after=stop_after,
                       sampler=DistributedSampler(ds, num_replicas=2, rank=info.rank, seed={seed}))
        return ddp, fit(ddp, ld, MTTSampler(1, 3, sample_num=3), TrainOptions(**{opts!r}, checkpoint_every_steps=5),
                        run_dir=f"{{out}}/ckpt", resume=resume, progress=False)
    try:
        ddp_fit(11, False)
    except Interrupted:
        pass
    barrier()
    resumed, resumed_hist = ddp_fit(None, True)
    resume_equal = all(torch.equal(a, b) for a, b in zip(resumed.module.state_dict().values(),
                                                         net.module.state_dict().values()))

    model = net.module
    tensors = {{"w." + k: v.detach().contiguous() for k, v in model.state_dict().items()}}
    tensors.update({{"g." + k: p.grad.detach().contiguous() for k, p in model.named_parameters()}})
    tensors.update({{"bn." + k: v.contiguous() for k, v in bn_model.state_dict().items() if "running" in k or "tracked" in k}})
    save_file(tensors, f"{{out}}/rank{{info.rank}}.safetensors")
    with open(f"{{out}}/rank{{info.rank}}.json", "w") as fh:
        json.dump({{"world": info.world_size, "backend": info.backend, "configs": sampler.log, "comm_calls": calls[0],
                   "history": hist, "per_rank_batch": loader.batch_size,
                   "resume_equal": resume_equal, "resumed_history": resumed_hist}}, fh)
    cleanup_distributed()
    """
)


def single_process_loader(ds):
    # DistributedSampler with one replica and the same seed: the same global batches, in order
    return DataLoader(ds, batch_size=GLOBAL_BATCH, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=SEED))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(
        WORKER.format(
            tests=str(TESTS),
            n=N,
            batch=GLOBAL_BATCH,
            seed=SEED,
            opts=OPTS,
            calib_config=CALIB_CONFIG,
            calib_batches=CALIB_BATCHES,
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["TMPDIR"] = str(out)  # torchrun leaves a log folder in the temp dir: keep it in the test's own
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    from safetensors.torch import load_file

    return [
        (json.loads((out / f"rank{r}.json").read_text()), load_file(str(out / f"rank{r}.safetensors"))) for r in (0, 1)
    ]


class RecordingSampler:
    def __init__(self, inner):
        self.inner, self.log = inner, []

    def sample(self, rng, num_stages):
        cfgs = self.inner.sample(rng, num_stages)
        self.log.append([list(c) for c in cfgs])
        return cfgs

    def describe(self):
        return self.inner.describe()


@pytest.fixture(scope="module")
def single_run():
    ds = NoisyFrames(n=N, noise=0.0)
    torch.manual_seed(0)
    model = TinyStaged()
    sampler = RecordingSampler(MTTSampler(1, 3, sample_num=3))
    hist = fit(model, single_process_loader(ds), sampler, TrainOptions(**OPTS), progress=False)
    torch.manual_seed(1)
    bn_model = TinyStaged(bn=True)
    calibrate_bn(bn_model, single_process_loader(ds), CALIB_CONFIG, num_batches=CALIB_BATCHES)
    return model, hist, sampler.log, bn_model


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_global_batch(ddp_run, single_run):
    (meta0, t0), (meta1, t1) = ddp_run
    model, hist, configs, _ = single_run
    assert (meta0["world"], meta0["backend"], meta0["per_rank_batch"]) == (2, "gloo", GLOBAL_BATCH // 2)
    # gradients of the last step and the final weights
    for name, p in model.named_parameters():
        torch.testing.assert_close(t0["g." + name], p.grad, rtol=1e-4, atol=1e-5)
    for name, v in model.state_dict().items():
        torch.testing.assert_close(t0["w." + name], v, rtol=1e-4, atol=1e-5)
        assert torch.equal(t0["w." + name], t1["w." + name])  # ranks stay identical
    # the logged loss is the mean over the global batch
    assert [round(r["train_loss"], 4) for r in meta0["history"]] == [round(r["train_loss"], 4) for r in hist]
    assert [r["train_acc"] for r in meta0["history"]] == pytest.approx([r["train_acc"] for r in hist])


@pytest.mark.slow
def test_every_rank_draws_the_same_time_configs(ddp_run, single_run):
    (meta0, _), (meta1, _) = ddp_run
    assert len(meta0["configs"]) == 2 * N // GLOBAL_BATCH
    assert meta0["configs"] == meta1["configs"] == single_run[2]


@pytest.mark.slow
def test_only_the_last_of_the_s_backward_passes_all_reduces(ddp_run):
    (meta0, _), (meta1, _) = ddp_run
    steps = len(meta0["configs"])
    # one gradient bucket (tiny model): exactly one all-reduce per iteration, not s = 3
    assert meta0["comm_calls"] == meta1["comm_calls"] == steps


@pytest.mark.slow
def test_synced_bn_calibration_equals_single_process_statistics(ddp_run, single_run):
    (_, t0), (_, t1) = ddp_run
    bn_model = single_run[3]
    keys = [k for k in bn_model.state_dict() if "running" in k or "tracked" in k]
    assert len(keys) == 6
    for k in keys:
        torch.testing.assert_close(t0["bn." + k], bn_model.state_dict()[k], rtol=1e-5, atol=1e-6)
        assert torch.equal(t0["bn." + k], t1["bn." + k])
    # and it is not the per-rank statistics: those differ from the global ones
    assert not torch.allclose(bn_model.bn.running_var, torch.ones_like(bn_model.bn.running_var))


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(device="cpu") and info.is_main and not info.distributed
    assert all_reduce_sums([1.5, 2]) == [1.5, 2.0]
    model = TinyStaged()
    assert wrap_ddp(model, info) is model
    ds = NoisyFrames(n=16, noise=0.0)  # no RNG in the data: both calibrations see the same batches
    a = TinyStaged(bn=True)
    b = TinyStaged(bn=True)
    b.load_state_dict(a.state_dict())
    loader = DataLoader(ds, batch_size=4)
    calibrate_bn(a, loader, (2, 2), num_batches=2)
    calibrate_bn_synced(b, loader, (2, 2), num_batches=2)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_global_batch_must_split_evenly_and_sync_bn_needs_cuda():
    assert per_rank_batch_size(256, 4) == 64
    with pytest.raises(ConfigError, match="divisible by the number of processes 3"):
        per_rank_batch_size(256, 3)
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        wrap_ddp(TinyStaged(bn=True), DistInfo(device="cpu"), sync_bn=True)
    loader = distributed_loader(NoisyFrames(n=10), DistInfo(rank=1, world_size=2), batch_size=4, seed=0)
    assert loader.batch_size == 2 and loader.sampler.rank == 1 and len(loader.sampler) == 5


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(ddp_run):
    for meta, _ in ddp_run:
        assert meta["resume_equal"] is True
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in meta["resumed_history"]] == strip
        assert [r["steps"] for r in meta["history"]] == [6, 6]  # per rank
