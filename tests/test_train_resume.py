"""Crash safety: a run resumed from its last checkpoint ends exactly like an uninterrupted one.

The model uses dropout and the dataset draws noise from the global torch RNG, and the loader
shuffles with its own generator, so the weights only match if every RNG, the TimeConfig
generator, the optimizer and the scheduler come back exactly, and a mid-epoch resume replays
the epoch's order and skips the batches already trained.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_train_loop import NoisyFrames, TinyStaged
from torch.utils.data import DataLoader

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.runs import prepare_run_dir
from flexsnn.train.checkpoint import CHECKPOINT_FILE
from flexsnn.train.loop import TrainOptions, fit
from flexsnn.train.samplers import MTTSampler

TESTS = Path(__file__).resolve().parent


class Interrupted(Exception):
    pass


class StopAfter(DataLoader):
    """A shuffling DataLoader that raises once ``stop_after`` batches have been trained."""

    def __init__(self, *args, stop_after: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.stop_after = stop_after
        self.fetched = 0

    def __iter__(self):
        for batch in super().__iter__():
            if self.stop_after is not None and self.fetched == self.stop_after:
                raise Interrupted
            self.fetched += 1
            yield batch


def loader(stop_after=None):
    return StopAfter(
        NoisyFrames(n=40), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5), stop_after=stop_after
    )  # 5 steps per epoch


OPTS = dict(epochs=2, lr=0.1, seed=11, checkpoint_every_steps=3)


def train(run_dir, stop_after=None, resume=False, **opts):
    torch.manual_seed(0)
    model = TinyStaged(dropout=0.3)
    history = fit(
        model,
        loader(stop_after),
        MTTSampler(1, 3),
        TrainOptions(**{**OPTS, **opts}),
        run_dir=run_dir,
        resume=resume,
        progress=False,
    )
    return model, history


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (its result does not depend on the checkpoint interval)."""
    return train(tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("stop_after", [3, 8])  # checkpoint at step 3 (mid-epoch 1); at 6 (mid-epoch 2), lost 7-8
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, stop_after, reference):
    ref_model, ref_hist = reference
    with pytest.raises(Interrupted):
        train(tmp_path / "run", stop_after=stop_after)
    model, hist = train(tmp_path / "run", resume=True)
    ref, got = weights(ref_model), weights(model)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert without_time(hist) == without_time(ref_hist)


def test_checkpoint_at_the_last_step_of_an_epoch_resumes_to_the_same_history(tmp_path, reference):
    # checkpoint_every_steps=5 fires on the epoch's last step; a crash before the epoch-end
    # checkpoint must still report the whole epoch (its running sums are in the checkpoint).
    ref_model, ref_hist = reference
    with pytest.raises(Interrupted):
        train(tmp_path / "run", stop_after=5, checkpoint_every_steps=5)
    model, hist = train(tmp_path / "run", resume=True, checkpoint_every_steps=5)
    assert without_time(hist) == without_time(ref_hist)
    assert all(torch.equal(a, b) for a, b in zip(weights(ref_model).values(), weights(model).values()))


def test_corrupt_or_truncated_checkpoint_is_a_clear_error_never_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(run, stop_after=4)
    ckpt = run / CHECKPOINT_FILE
    data = ckpt.read_bytes()
    for broken in (data[: len(data) // 2], data[:5], b"\x00" * 64):
        ckpt.write_bytes(broken)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            train(run, resume=True)
        assert ckpt.read_bytes() == broken  # nothing was overwritten
        with pytest.raises(CheckpointError, match="already holds a run"):
            prepare_run_dir(run, resume=False)


def test_resume_refuses_changed_training_options_or_sampler(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(run, stop_after=4)
    with pytest.raises(ConfigError, match=r"lr: 0.1 -> 0.2"):
        train(run, resume=True, lr=0.2)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="sampler differs"):
        fit(
            TinyStaged(dropout=0.3),
            loader(),
            MTTSampler(1, 4),
            TrainOptions(**OPTS),
            run_dir=run,
            resume=True,
            progress=False,
        )
    # the checkpoint interval may change: it does not change the result
    train(run, resume=True, checkpoint_every_steps=2)


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.safetensors"):
        train(tmp_path / "empty", resume=True)


CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_train_resume import train, loader, StopAfter
    import test_train_resume as t
    from safetensors.torch import save_file

    run_dir, mode = sys.argv[1], sys.argv[2]

    class Hang(StopAfter):
        def __iter__(self):
            for batch in DataLoader.__iter__(self):
                if self.fetched == 8:
                    print("TRAINED 8 STEPS", flush=True)
                    time.sleep(120)  # killed here, mid-epoch 2, two steps after a checkpoint
                self.fetched += 1
                yield batch

    from torch.utils.data import DataLoader
    if mode == "hang":
        t.StopAfter = Hang
    model, hist = train(run_dir, resume=(mode == "resume"))
    save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, run_dir + "/final.safetensors")
    if mode == "resume":  # the uninterrupted reference, in a process with the same settings
        model, hist = train(run_dir + "/ref")
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, run_dir + "/ref/final.safetensors")
    """
)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    run.mkdir()
    victim = subprocess.Popen(
        [sys.executable, str(script), str(run), "hang"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = victim.stdout.readline()
        assert "TRAINED 8 STEPS" in line, victim.stderr.read()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (run / "final.safetensors").exists()

    from safetensors import safe_open

    with safe_open(str(run / CHECKPOINT_FILE), framework="pt") as fh:
        import json

        state = json.loads(fh.metadata()["flexsnn_state"])["train_state"]
    # checkpoints every 3 steps: the last one holds 6 steps; only steps 7-8 are lost
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (6, 1, 1)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no torn temp files left behind

    resumed = subprocess.run(
        [sys.executable, str(script), str(run), "resume"], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    from safetensors.torch import load_file

    got, want = load_file(str(run / "final.safetensors")), load_file(str(run / "ref" / "final.safetensors"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_grad_scaler_state_survives_a_resume(tmp_path):
    # fp16 autocast + GradScaler (CPU here; the same path runs on CUDA with amp "auto")
    import json

    from safetensors import safe_open

    def final_scaler(run):
        with safe_open(str(run / CHECKPOINT_FILE), framework="pt") as fh:
            return json.loads(fh.metadata()["flexsnn_state"])["scaler"]

    ref_model, ref_hist = train(tmp_path / "ref", amp="fp16")
    with pytest.raises(Interrupted):
        train(tmp_path / "run", stop_after=7, amp="fp16")
    model, hist = train(tmp_path / "run", resume=True, amp="fp16")
    assert final_scaler(tmp_path / "run") == final_scaler(tmp_path / "ref")
    assert final_scaler(tmp_path / "ref")["_growth_tracker"] == 10  # 10 steps without overflow
    for a, b in zip(weights(ref_model).values(), weights(model).values()):
        assert torch.equal(a, b)
