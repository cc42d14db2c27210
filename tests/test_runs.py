import json

import pytest
import torch
from conftest import make_frame_loaders

from flexsnn.errors import CheckpointError, ConfigError, InputError
from flexsnn.runs import RunSpec, evaluate_run, prepare_run_dir, train_run


def tiny_spec(**kw):
    base = dict(
        model="digits_mlp",
        model_kwargs={"in_shape": [2, 6, 6], "num_classes": 3, "hidden": [32, 16], "pool": 1},
        method="mtt",
        t_min=1,
        t_max=3,
        epochs=4,
        batch_size=16,
        lr=0.05,
        calib_batches=2,
    )
    base.update(kw)
    return RunSpec(**base)


@pytest.mark.slow
def test_mtt_run_learns_and_evaluates_at_every_t(tmp_path):
    loaders = make_frame_loaders(n_train=96, n_test=48, t=3)
    spec = tiny_spec()
    model, config = train_run(spec, tmp_path / "run", progress=False, loaders=loaders)
    hist = config["history"]
    assert len(hist) == 4 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors", "checkpoint.safetensors"} <= files
    res = evaluate_run(tmp_path / "run", progress=False, loaders=loaders, configs=[(3, 1)])
    assert list(res["uniform"]) == ["1", "2", "3"]
    assert res["uniform"]["3"] > 0.6  # chance is 1/3: it must have learned
    assert res["configs"][0]["config"] == [3, 1]


def test_existing_run_is_never_overwritten_silently(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="already holds a run"):
        prepare_run_dir(tmp_path, resume=False)
    with pytest.raises(CheckpointError, match="--resume given but"):
        prepare_run_dir(tmp_path / "new", resume=True)


def test_runspec_rejects_unknown_options_and_bad_device():
    with pytest.raises(ConfigError, match="unknown run option"):
        RunSpec.from_dict({"epochz": 3})
    from flexsnn.runs import resolve_device

    with pytest.raises(InputError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_early_exit_rebinned_curve_bins_the_events_at_every_t(tmp_path, monkeypatch):
    # the uniform curve next to the early-exit one sees frames binned at each T, BN calibrated there
    import flexsnn.runs.evaluate as run_evaluate
    from flexsnn.runs import early_exit_run

    train_run(tiny_spec(epochs=1, t_max=3), tmp_path / "run", progress=False, loaders=make_frame_loaders(t=3))
    built = []

    def loaders_at(spec, shuffle_seed=None):
        built.append(spec.frames_t)
        return make_frame_loaders(t=spec.frames_t)

    monkeypatch.setattr(run_evaluate, "build_loaders", loaders_at)
    seen = []
    original = run_evaluate.sweep_uniform

    def recording_sweep(model, test_loader, t_values, *args, **kw):
        seen.append((list(t_values), next(iter(test_loader))[0].shape[1], kw.get("calibrate", True)))
        return original(model, test_loader, t_values, *args, **kw)

    monkeypatch.setattr(run_evaluate, "sweep_uniform", recording_sweep)
    result = early_exit_run(tmp_path / "run", thresholds=(0.0, 2.0), rebinned=True)
    assert built == [3, 1, 2]  # the run's loaders, then training and test frames binned at T = 1, 2
    assert seen == [([1], 1, True), ([2], 2, True), ([3], 3, True)]
    assert list(result.rebinned) == ["1", "2", "3"]
    # at the data T it is the full early-exit pass (threshold above 1: every sample runs to T)
    assert result.rebinned["3"] == pytest.approx(result.points[-1].accuracy, abs=1e-6)


def test_corrupt_weights_give_a_clear_error(tmp_path):
    loaders = make_frame_loaders(t=2)
    train_run(tiny_spec(epochs=1, t_max=2), tmp_path / "run", progress=False, loaders=loaders)
    weights = tmp_path / "run" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        evaluate_run(tmp_path / "run", progress=False, loaders=loaders)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["name"] == "digits_mlp"


def test_evaluate_rebins_the_events_at_every_t(tmp_path, monkeypatch):
    # on an event dataset every uniform T gets frames binned at T (no copies of the data T's frames)
    import flexsnn.runs.evaluate as run_evaluate

    spec = tiny_spec(epochs=1, t_max=3)
    train_run(spec, tmp_path / "run", progress=False, loaders=make_frame_loaders(t=3))
    built = []

    def loaders_at(spec, shuffle_seed=None):
        built.append(spec.frames_t)
        return make_frame_loaders(t=spec.frames_t)

    monkeypatch.setattr(run_evaluate, "build_loaders", loaders_at)
    model_inputs = []
    original = run_evaluate.sweep_uniform

    def recording_sweep(model, test_loader, t_values, **kw):
        model_inputs.append((list(t_values), next(iter(test_loader))[0].shape[1]))
        return original(model, test_loader, t_values, **kw)

    monkeypatch.setattr(run_evaluate, "sweep_uniform", recording_sweep)
    res = evaluate_run(tmp_path / "run", t_values=[1, 3, 7], progress=False)
    assert built == [3, 1, 7]  # the run's data T first, then each other T (BN calibrated on frames at T)
    assert model_inputs == [([1], 1), ([3], 3), ([7], 7)]
    assert list(res["uniform"]) == ["1", "3", "7"] and res["rebinned"] is True
    built.clear()
    tests_at = []
    monkeypatch.setattr(
        run_evaluate,
        "load_frames",
        lambda name, split, t, root: tests_at.append((split, t)) or make_frame_loaders(t=t)[1].dataset,
    )
    res = evaluate_run(tmp_path / "run", t_values=[1, 3, 7], progress=False, calibration="t_max")
    assert built == [3] and tests_at == [("test", 1), ("test", 7)]  # BN fixed at t_max: only the test split again
    assert model_inputs[-3:] == [([1], 1), ([3], 3), ([7], 7)]
    built.clear()
    res = evaluate_run(tmp_path / "run", t_values=[1, 7], progress=False, rebin=False)
    assert built == [3] and model_inputs[-1] == ([1, 7], 3) and res["rebinned"] is False
    with pytest.raises(InputError, match="rebin=True"):
        evaluate_run(tmp_path / "run", progress=False, rebin=True, loaders=make_frame_loaders(t=3))
