"""The bias-free fine-tune (SDT / MTT) and deployed run folders."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import TINY_NMNIST_KWARGS, make_frame_loaders, tiny_nmnist_loaders, train_tiny_nmnist_run
from torch import nn

from flexsnn.deploy import check_bias_free, deployment_sampler, finetune_bias_free
from flexsnn.errors import CheckpointError, ConfigError, InputError
from flexsnn.runs import load_deployed, load_run, prepare_deployment
from flexsnn.train import MTTSampler, SDTSampler, TrainOptions, load_model

SHAPE = (2, 8, 8)
MODEL_KW = TINY_NMNIST_KWARGS


def test_sdt_sampler_pins_every_stage():
    s = deployment_sampler("sdt", 10)
    assert isinstance(s, SDTSampler)
    assert s.sample(random.Random(0), 3) == [(10, 10, 10)]


def test_mtt_sampler_keeps_the_input_at_t_and_draws_every_stage():
    s = deployment_sampler("mtt", 10)  # paper's recipe: L = T - 1, R = 0 -> [1, 10], the input pinned
    assert isinstance(s, MTTSampler) and (s.t_min, s.t_max, s.first_stage_t, s.sample_num) == (1, 10, None, 3)
    rng = random.Random(0)
    drawn = [set() for _ in range(2)]
    for _ in range(200):
        configs = s.sample(rng, 2)
        assert len(configs) == 3
        for cfg in configs:
            assert all(1 <= v <= 10 for v in cfg)
            for stage, v in enumerate(cfg):
                drawn[stage].add(v)
    assert drawn == [set(range(1, 11))] * 2  # stage 1 is drawn too (on a 2-stage net both stages mix)
    s = deployment_sampler("mtt", 10, t_left=2, t_right=1, sample_num=2)
    assert (s.t_min, s.t_max) == (8, 11)
    assert deployment_sampler("mtt", 3, t_left=9).t_min == 1  # clipped at 1


def test_mtt_sampler_stage1_pin_is_the_explicit_old_scheme():
    s = deployment_sampler("mtt", 10, pin="stage1")
    assert (s.t_min, s.t_max, s.first_stage_t) == (1, 10, 10)
    configs = [cfg for _ in range(100) for cfg in s.sample(random.Random(_), 2)]
    assert {cfg[0] for cfg in configs} == {10} and {cfg[1] for cfg in configs} == set(range(1, 11))
    assert deployment_sampler("sdt", 10, pin="stage1") == SDTSampler(10)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(method="nmt", t=4), InputError, "method must be one of"),
        (dict(method="mtt", t=0), InputError, "t must be a positive integer"),
        (dict(method="mtt", t=4, t_left=-1), InputError, "t_left"),
        (dict(method="mtt", t=4, t_right=1.5), InputError, "t_right"),
        (dict(method="mtt", t=4, pin="stage2"), InputError, "pin must be one of"),
    ],
)
def test_sampler_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        deployment_sampler(**kwargs)


def tiny_deployable(bn=True):
    from flexsnn.models import build_model

    torch.manual_seed(0)
    return build_model("nmnist_net", bn=bn, **MODEL_KW)


@pytest.mark.parametrize("method", ["sdt", "mtt"])
def test_finetune_keeps_biases_zero_and_trains_weights(method):
    train, _ = make_frame_loaders(n_train=32, t=4, shape=SHAPE, classes=3, batch=16)
    model = tiny_deployable()
    with torch.no_grad():  # a trained BN: non-trivial statistics and shifts
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    model.head.bias = nn.Parameter(torch.ones(3))  # a bias to remove and keep at zero
    before = model.stages[0][0].weight.detach().clone()
    opts = TrainOptions(epochs=2, optimizer="sgd", lr=0.5, weight_decay=0.1)
    history = finetune_bias_free(model, train, method, t=4, options=opts, progress=False)
    assert len(history) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.count_nonzero(model.head.bias) == 0 and not model.head.bias.requires_grad
    assert not torch.equal(model.stages[0][0].weight, before)
    check_bias_free(model)


@pytest.mark.parametrize("pin", ["input", "stage1"])
def test_finetune_feeds_frames_at_t_and_draws_stage1_unless_pinned(pin):
    train, _ = make_frame_loaders(n_train=64, t=4, shape=SHAPE, classes=3, batch=8)
    model = tiny_deployable()
    seen = []  # (frames T, stage 1's T) of every training forward
    model.stages[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[0].shape[0]), with_kwargs=True)
    finetune_bias_free(
        model, train, "mtt", t=4, options=TrainOptions(epochs=1, optimizer="sgd", lr=0.01), progress=False, pin=pin
    )
    frames_t, stage1_t = seen[0::2], seen[1::2]
    assert len(stage1_t) == 8 * 3  # 8 batches x 3 configs
    assert set(frames_t) == {4}  # the input stays at the data's T
    assert set(stage1_t) == ({4} if pin == "stage1" else {1, 2, 3, 4})


def test_prepare_and_load_deployed_round_trip(tmp_path):
    loaders = tiny_nmnist_loaders(t=4)
    run = train_tiny_nmnist_run(tmp_path / "base", loaders=loaders)
    model, config = prepare_deployment(run, tmp_path / "mtt", method="mtt", epochs=1, progress=False, loaders=loaders)
    deploy = config["deploy"]
    assert deploy["method"] == "mtt" and deploy["t"] == 4 and deploy["t_left"] == 3 and deploy["t_right"] == 0
    assert deploy["sampler"]["first_stage_t"] is None and deploy["pin"] == "input" and 0 <= deploy["accuracy_t"] <= 1
    loaded, cfg = load_deployed(tmp_path / "mtt")
    check_bias_free(loaded)
    x = next(iter(loaders[1]))[0].transpose(0, 1)
    model.eval(), loaded.eval()
    assert torch.equal(model(x, time_config=4), loaded(x, time_config=4))
    assert cfg["deploy"]["source_run"] == str(run)
    # load_run picks the deployed loader by itself; the plain loader refuses a deployed folder
    assert torch.equal(load_run(tmp_path / "mtt")[0].eval()(x, time_config=4), loaded(x, time_config=4))
    with pytest.raises(CheckpointError, match="is a deployed run.*flexsnn.runs.load_run"):
        load_model(tmp_path / "mtt")
    # refuses to overwrite, to re-deploy a deployed run, and to load a plain run as deployed
    with pytest.raises(CheckpointError, match="already holds a run"):
        prepare_deployment(run, tmp_path / "mtt", epochs=1, progress=False, loaders=loaders)
    with pytest.raises(InputError, match="already a deployed run"):
        prepare_deployment(tmp_path / "mtt", tmp_path / "again", epochs=1, progress=False, loaders=loaders)
    with pytest.raises(CheckpointError, match="not a deployed run"):
        load_deployed(run)
    with pytest.raises(CheckpointError, match="not found"):
        load_deployed(tmp_path / "missing")


def test_prepare_resume_continues_from_checkpoint(tmp_path, monkeypatch):
    import flexsnn.train.loop as loop

    def loaders():  # fresh, identically seeded loaders for every run (as the CLI builds them)
        return tiny_nmnist_loaders(t=4)

    run = train_tiny_nmnist_run(tmp_path / "base", loaders=loaders())
    full, _ = prepare_deployment(run, tmp_path / "full", method="mtt", epochs=2, progress=False, loaders=loaders())
    save = loop.save_training_state

    def killed_after_first_checkpoint(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_training_state", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        prepare_deployment(run, tmp_path / "part", method="mtt", epochs=2, progress=False, loaders=loaders())
    monkeypatch.setattr(loop, "save_training_state", save)
    resumed, _ = prepare_deployment(
        run, tmp_path / "part", method="mtt", epochs=2, progress=False, loaders=loaders(), resume=True
    )
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_finetune_bad_sampler_range_raises():
    with pytest.raises((InputError, ConfigError)):
        deployment_sampler("mtt", 2, t_left=0, t_right=0, sample_num=0)
