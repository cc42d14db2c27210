"""Run folders under hostile use: a refused --resume changes nothing, one writer per folder (a
second process is told the holder's PID), nothing is written over without --overwrite, a
tampered run spec is named, a bad --config fails before any sweep, and `deploy prepare`
checkpoints inside epochs and resumes bit-for-bit like `train`."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import make_frame_loaders, train_tiny_nmnist_run
from torch.utils.data import DataLoader

import flexsnn.runs.deploy as run_deploy
import flexsnn.runs.evaluate as run_evaluate
import flexsnn.runs.folder as folder_mod
import flexsnn.runs.train as run_train
from flexsnn.cli import main
from flexsnn.errors import CheckpointError, ConfigError, RunFolderBusyError
from flexsnn.runs import (
    RunSpec,
    check_run_dir,
    claim_run_dir,
    evaluate_run,
    holding_run_locks,
    prepare_deployment,
    run_folder_lock,
    train_run,
)
from flexsnn.runs.folder import LOCK_FILE
from flexsnn.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE

KW = {"in_shape": [2, 6, 6], "num_classes": 3, "hidden": [8, 6], "pool": 1}  # two stages
TRAIN_ARGS = [
    "--model",
    "digits_mlp",
    "--method",
    "sdt",
    "--t-max",
    "2",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--calib-batches",
    "1",
    "--quiet",
]


def loaders():
    return make_frame_loaders(n_train=32, n_test=16, t=2, classes=3, batch=16)


@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI's train / evaluate on tiny synthetic frames and a 3-class digits_mlp."""
    fake = lambda spec, shuffle_seed=None: loaders()  # noqa: E731
    monkeypatch.setattr(run_train, "build_loaders", fake)
    monkeypatch.setattr(run_evaluate, "build_loaders", fake)
    monkeypatch.setattr(run_deploy, "build_loaders", fake)
    import flexsnn.runs.spec as spec_mod

    real = spec_mod.with_dataset_defaults
    monkeypatch.setattr(
        run_train,
        "with_dataset_defaults",
        lambda spec: real(
            RunSpec.from_dict({**spec.__dict__, "model_kwargs": KW}) if spec.model == "digits_mlp" else spec
        ),
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


# --- a refused resume changes nothing ------------------------------------------------------


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny_cli, capsys):
    run = tmp_path / "r"
    assert main(["train", *TRAIN_ARGS, "--out", str(run)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    for flags, message in (
        (["--lr", "0.5"], "lr: 0.1 -> 0.5"),
        (["--seed", "7"], "seed: 1000 -> 7"),
        (["--method", "mtt"], "TimeConfig sampler differs"),
    ):
        assert main(["train", "--out", str(run), "--resume", "--quiet", *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert snapshot(run) == before  # run_spec.json, metrics, checkpoint: untouched
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0  # still resumable as it was


def test_a_tampered_run_spec_is_named_on_resume(tmp_path, tiny_cli, capsys):
    run = tmp_path / "r"
    assert main(["train", *TRAIN_ARGS, "--out", str(run)]) == 0
    capsys.readouterr()
    spec_file = run / "run_spec.json"
    good = json.loads(spec_file.read_text())
    for edit, message in [
        (lambda d: [1, 2, 3], "key 'run' is missing"),
        (lambda d: {k: v for k, v in d.items() if k != "run"}, "key 'run' is missing"),
        (lambda d: {**d, "run": {**d["run"], "method": 7}}, "key 'run.method' must be one of 'sdt', 'nmt', 'mtt'"),
        (lambda d: {**d, "run": {**d["run"], "epochs": "abc"}}, "key 'run.epochs' must be an integer >= 1"),
        (lambda d: {**d, "run": {**d["run"], "epochs": -5}}, "key 'run.epochs' must be an integer >= 1"),
        (lambda d: {**d, "run": {**d["run"], "lr": None}}, "key 'run.lr' must be a number > 0"),
        (lambda d: {**d, "run": {**d["run"], "bogus": 1}}, "unknown run option(s) ['bogus']"),
    ]:
        spec_file.write_text(json.dumps(edit(good)))
        assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(spec_file) in err and message in err, err


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: abc\n", "key 'lr' must be a number > 0, got 'abc'"),
        ("epochs: -5\n", "key 'epochs' must be an integer >= 1, got -5"),
        ("epochs: 1000000000.5\n", "key 'epochs' must be an integer"),
        ("method: 7\n", "key 'method' must be one of"),
        ("model_kwargs: [1, 2]\n", "key 'model_kwargs' must be a mapping"),
        ("augment: 'yes'\n", "key 'augment' must be true or false or one of"),
        ("run: [1, 2]\n", "key 'run' must be a mapping"),
        ("a: &a [*a]\n", "nested too deeply"),
    ],
)
def test_a_tampered_config_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "r").exists()


def test_config_json_without_a_run_section_is_named(tmp_path):
    run = tmp_path / "r"
    train_run(
        RunSpec(model="digits_mlp", model_kwargs=KW, method="sdt", t_max=2, epochs=1, batch_size=16, calib_batches=1),
        run,
        progress=False,
        loaders=loaders(),
    )
    config = json.loads((run / CONFIG_FILE).read_text())
    for edit, message in (
        (lambda c: c.pop("run"), "key 'run' is missing"),
        (lambda c: c["run"].update(method=7), "key 'run.method' must be one of"),
        (lambda c: c["run"].update(t_max=0), "key 'run.t_max' must be an integer >= 1"),
    ):
        broken = json.loads(json.dumps(config))
        edit(broken)
        (run / CONFIG_FILE).write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=message) as err:
            evaluate_run(run, progress=False, loaders=loaders())
        assert str(run / CONFIG_FILE) in str(err.value)


def test_a_bad_config_fails_before_the_sweep(tmp_path, monkeypatch):
    run = tmp_path / "r"
    train_run(
        RunSpec(model="digits_mlp", model_kwargs=KW, method="sdt", t_max=2, epochs=1, batch_size=16, calib_batches=1),
        run,
        progress=False,
        loaders=loaders(),
    )
    swept = []
    monkeypatch.setattr(run_evaluate, "sweep_uniform", lambda *a, **k: swept.append(1) or {1: 0.0})
    for configs in ([(1, 2, 3)], [(2, 2), (1,)], [(0, 1)], ["ab"]):
        with pytest.raises(ConfigError, match=r"--config .* does not fit this run's 2-stage model"):
            evaluate_run(run, configs=configs, progress=False, loaders=loaders())
    with pytest.raises(Exception, match="calibration must be one of"):
        evaluate_run(run, calibration="sometimes", progress=False, loaders=loaders())
    assert swept == []


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path, tiny_cli, capsys):
    run = tmp_path / "r"
    assert main(["train", *TRAIN_ARGS, "--out", str(run)]) == 0
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    stale = [run / f".checkpoint.safetensors.{dead}-deadbeef.tmp", run / f".history.json.{dead}-0000abcd.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert not any(p.exists() for p in stale)


# --- one writer per folder -----------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from flexsnn.runs import run_folder_lock
    with run_folder_lock(sys.argv[1], "flexsnn train"):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path/'r'."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(RunFolderBusyError, match=rf"in use by process {holder.pid} \(flexsnn train\)"):
        with run_folder_lock(tmp_path / "r"):
            pass
    holder.kill()
    holder.wait()
    assert (tmp_path / "r" / LOCK_FILE).read_text().startswith(str(holder.pid))  # the dead holder's record
    with run_folder_lock(tmp_path / "r", "me"):  # stale: taken over
        assert (tmp_path / "r" / LOCK_FILE).read_text() == f"{os.getpid()} me\n"


def test_every_writing_verb_refuses_a_locked_folder_with_exit_2(tmp_path, holder, tiny_cli, capsys):
    locked = tmp_path / "r"
    base = tmp_path / "base"
    assert main(["train", *TRAIN_ARGS, "--out", str(base)]) == 0
    capsys.readouterr()
    for argv in (
        ["train", *TRAIN_ARGS, "--out", str(locked)],
        ["evaluate", "--run", str(base), "--out", str(locked), "--quiet"],
        ["deploy", "prepare", "--run", str(base), "--out", str(locked), "--epochs", "1", "--quiet"],
        ["demo", "--out", str(locked), "--epochs", "1", "--t-max", "1", "--quiet"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by process {holder.pid}" in err, (argv, err)
    assert sorted(p.name for p in locked.iterdir()) == [LOCK_FILE]


def test_a_folder_being_written_is_reported_busy_not_as_a_finished_run(tmp_path, holder):
    (tmp_path / "r" / CONFIG_FILE).write_text("{}")  # the holder has written part of its run
    with pytest.raises(RunFolderBusyError, match=rf"in use by process {holder.pid}"):
        with claim_run_dir(tmp_path / "r", resume=False):
            pass
    holder.kill()
    holder.wait()
    with pytest.raises(CheckpointError, match="already holds a run"):
        with claim_run_dir(tmp_path / "r", resume=False):
            pass


def test_check_run_dir_refuses_early_creates_nothing_and_keeps_no_lock(tmp_path, holder):
    check_run_dir(tmp_path / "new", resume=False)
    assert not (tmp_path / "new").exists()
    with pytest.raises(CheckpointError, match="--resume given but"):
        check_run_dir(tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(RunFolderBusyError, match=rf"in use by process {holder.pid}"):
        check_run_dir(tmp_path / "r", resume=False)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / CONFIG_FILE).write_text("{}")
    with pytest.raises(CheckpointError, match="already holds a run"):
        check_run_dir(tmp_path / "done", resume=False)
    check_run_dir(tmp_path / "done", resume=False, overwrite=True)
    probe = subprocess.run(  # the lock taken for the check was released
        [sys.executable, "-c", HOLDER.replace("time.sleep(120)", "pass"), str(tmp_path / "done")],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr


def test_train_and_deploy_refuse_a_taken_folder_before_any_work(tmp_path, holder, monkeypatch, capsys):
    base = train_tiny_nmnist_run(tmp_path / "base", t=2, calib_batches=1)

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    for module, name in (
        (run_train, "build_loaders"),
        (run_train, "check_training_memory"),
        (run_deploy, "build_loaders"),
        (run_deploy, "check_memory"),
    ):
        monkeypatch.setattr(module, name, no_work)
    for out, refusal in ((tmp_path / "r", f"in use by process {holder.pid}"), (base, "already holds a run")):
        for argv in (
            ["train", *TRAIN_ARGS, "--out", str(out)],
            ["deploy", "prepare", "--run", str(base), "--out", str(out), "--epochs", "1", "--quiet"],
        ):
            assert main(argv) == 2
            printed, err = capsys.readouterr()
            assert printed == "" and err.count("\n") == 1 and refusal in err, (argv, printed, err)


def test_locks_are_reentrant_and_held_through_a_verb(tmp_path):
    with holding_run_locks():
        with claim_run_dir(tmp_path / "a", resume=False, what="t"):
            with run_folder_lock(tmp_path / "a"):
                pass
        # released by the block above? no: kept until holding_run_locks ends
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER.replace("time.sleep(120)", "pass"), str(tmp_path / "a")],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "in use by process" in probe.stderr
    probe = subprocess.run(
        [sys.executable, "-c", HOLDER.replace("time.sleep(120)", "pass"), str(tmp_path / "a")],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_mod.fcntl, "flock", no_flock)
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(f"{os.getppid()} flexsnn train\n")  # alive
    with pytest.raises(RunFolderBusyError, match=f"in use by process {os.getppid()}"):
        with run_folder_lock(folder):
            pass
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    (folder / LOCK_FILE).write_text(f"{dead} flexsnn train\n")
    with run_folder_lock(folder):
        pass


@pytest.mark.slow
def test_two_train_processes_on_one_folder_one_is_refused(tmp_path):
    flexsnn = str(Path(sys.executable).parent / "flexsnn")
    cmd = [
        flexsnn,
        "train",
        "--model",
        "digits_mlp",
        "--method",
        "sdt",
        "--t-max",
        "1",
        "--epochs",
        "100000",  # far longer than the second command takes: the first still holds the folder
        "--batch-size",
        "128",
        "--calib-batches",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    ]
    # SIGINT back to its default in the child: a suite started in the background (nohup, `&`
    # without job control) passes SIG_IGN down, and Python then never raises KeyboardInterrupt
    first = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while not (tmp_path / "r" / LOCK_FILE).exists() or not (tmp_path / "r" / LOCK_FILE).read_text():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, first.communicate()[1]
    finally:
        first.send_signal(signal.SIGINT)
        try:
            out, err = first.communicate(timeout=120)
        finally:
            if first.poll() is None:  # never leave a 100,000-epoch run behind
                first.kill()
                first.communicate()
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and f"in use by process {first.pid}" in second.stderr
    assert first.returncode == 130 and err.strip().endswith("flexsnn train: interrupted"), err
    assert not (tmp_path / "r" / LOCK_FILE).read_text()  # the interrupted holder released it


# --- nothing written over without --overwrite ----------------------------------------------


def test_outputs_into_another_runs_folder_or_earlier_results_are_refused(tmp_path, tiny_cli, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert main(["train", *TRAIN_ARGS, "--out", str(run)]) == 0
    capsys.readouterr()
    before = snapshot(b)
    for verb in ("evaluate", "search", "early-exit"):
        assert main([verb, "--run", str(a), "--out", str(b)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {b} holds a run" in err and "--overwrite" in err, err
    assert snapshot(b) == before
    assert main(["evaluate", "--run", str(a), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    assert main(["evaluate", "--run", str(a), "--out", str(tmp_path / "ev"), "--quiet"]) == 2
    assert "already holds results.json" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(a), "--out", str(tmp_path / "ev"), "--quiet", "--overwrite"]) == 0
    assert main(["evaluate", "--run", str(a), "--quiet"]) == 0  # RUN/eval: the run's own, replaced
    assert main(["evaluate", "--run", str(a), "--quiet"]) == 0
    nir_file = tmp_path / "model.nir"
    nir_file.write_bytes(b"an earlier export")
    assert main(["deploy", "export", "--run", str(a), "--out", str(nir_file)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert nir_file.read_bytes() == b"an earlier export"


# --- deploy prepare checkpoints inside epochs and resumes -----------------------------------


class Interrupted(Exception):
    pass


class StopAfter(DataLoader):
    def __init__(self, *args, stop_after=None, **kw):
        super().__init__(*args, **kw)
        self.stop_after, self.fetched = stop_after, 0

    def __iter__(self):
        for batch in super().__iter__():
            if self.stop_after is not None and self.fetched == self.stop_after:
                raise Interrupted
            self.fetched += 1
            yield batch


def deploy_loaders(stop_after=None):
    train, test = make_frame_loaders(n_train=48, n_test=16, t=3, shape=(2, 8, 8), classes=3, batch=16)
    train = StopAfter(
        train.dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3), stop_after=stop_after
    )
    return train, test


def test_deploy_prepare_checkpoints_inside_epochs_and_resumes_bit_for_bit(tmp_path):
    base = tmp_path / "base"
    train_tiny_nmnist_run(base, t=3, calib_batches=1)
    args = dict(method="mtt", epochs=2, lr=0.01, seed=5, progress=False, checkpoint_every_steps=1)
    whole, _ = prepare_deployment(base, tmp_path / "whole", loaders=deploy_loaders(), **args)
    with pytest.raises(Interrupted):  # killed in epoch 2, after its first step (3 steps per epoch)
        prepare_deployment(base, tmp_path / "cut", loaders=deploy_loaders(stop_after=4), **args)
    state = json.loads(
        __import__("safetensors").safe_open(str(tmp_path / "cut" / CHECKPOINT_FILE), "pt").metadata()["flexsnn_state"]
    )["train_state"]
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    with pytest.raises(ConfigError, match="lr: 0.01 -> 0.5"):  # refused before writing anything
        prepare_deployment(base, tmp_path / "cut", loaders=deploy_loaders(), resume=True, **{**args, "lr": 0.5})
    resumed, _ = prepare_deployment(base, tmp_path / "cut", loaders=deploy_loaders(), resume=True, **args)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_deploy_prepare_resume_from_the_cli_reuses_the_saved_recipe(tmp_path, tiny_cli, capsys, monkeypatch):
    base = tmp_path / "base"
    train_tiny_nmnist_run(base, t=3, calib_batches=1)
    monkeypatch.setattr(run_deploy, "build_loaders", lambda spec, shuffle_seed=None: deploy_loaders())
    out = tmp_path / "d"
    argv = ["deploy", "prepare", "--run", str(base), "--out", str(out), "--quiet"]
    assert main([*argv, "--method", "sdt", "--epochs", "1", "--lr", "0.02", "--checkpoint-every-steps", "2"]) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0  # the recipe comes from deploy_spec.json: nothing to redo
    assert "SDT fine-tune" in capsys.readouterr().out
    assert main([*argv, "--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.02 -> 0.5" in capsys.readouterr().err


# --- a busy folder under torchrun: every rank refuses at once ---------------------------------

RANK_WORKER = """
import datetime, json, sys, time
import torch.distributed as dist
from flexsnn.runs import claim_run_dir
from flexsnn.train.distributed import barrier

rank, init, folder, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
start = time.monotonic()
try:
    with claim_run_dir(folder, resume=False, what="flexsnn train", enabled=rank == 0):
        barrier()  # what train_run does next: a rank that got in would wait here for the timeout
        outcome = ["entered", ""]
except Exception as exc:
    outcome = [type(exc).__name__, str(exc)]
outcome.append(time.monotonic() - start)
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(outcome, fh)
dist.destroy_process_group()
"""


def test_a_busy_folder_is_refused_on_every_rank_at_once(tmp_path, holder):
    """Two gloo ranks (torch.distributed, file:// rendezvous) on a folder another process holds:
    rank 0 and rank 1 both raise RunFolderBusyError with the same message, without waiting."""
    script = tmp_path / "rank_worker.py"
    script.write_text(RANK_WORKER)
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), init, str(tmp_path / "r"), str(tmp_path)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    errors = [p.communicate(timeout=120)[1] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], errors
    (kind0, msg0, waited0), (kind1, msg1, waited1) = (
        json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)
    )
    assert kind0 == kind1 == "RunFolderBusyError" and msg0 == msg1 and f"in use by process {holder.pid}" in msg0
    assert max(waited0, waited1) < 30  # far below the 60 s a rank stuck at the barrier would wait
