"""SDT with s identical passes per iteration (``--sample-num`` for SDT), as the paper's
authors' script runs its SDT baseline: the summed gradient of s identical passes is s times
one pass's, the choice is recorded, a resume with another s is refused."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net

from flexsnn.cli import build_parser, main
from flexsnn.cli.deploy_cmd import prepare_options
from flexsnn.cli.train_cmd import spec_from_args
from flexsnn.deploy import deployment_sampler
from flexsnn.errors import ConfigError
from flexsnn.runs import RunSpec
from flexsnn.train import SDTSampler, TrainOptions, fit, make_sampler, sampler_from_dict, time_averaged_loss
from flexsnn.train.loop import check_resume, train_step


def test_sdt_sampler_repeats_the_uniform_config_and_defaults_to_one_pass():
    rng = random.Random(0)
    assert SDTSampler(4).sample(rng, 3) == [(4, 4, 4)]
    assert SDTSampler(4, sample_num=3).sample(rng, 2) == [(4, 4)] * 3
    assert SDTSampler(4).describe() == {"method": "sdt", "t": 4, "sample_num": 1}
    assert make_sampler("sdt", t_max=6) == SDTSampler(6)  # one pass unless asked
    assert make_sampler("sdt", t_max=6, sample_num=3) == SDTSampler(6, 3)
    assert make_sampler("mtt", t_max=6).sample_num == 3
    # a record written before SDT had passes: one pass
    assert sampler_from_dict({"method": "sdt", "t": 6}) == SDTSampler(6)
    assert sampler_from_dict(SDTSampler(6, 3).describe()) == SDTSampler(6, 3)
    with pytest.raises(ConfigError, match="unknown key"):
        sampler_from_dict({"method": "sdt", "t": 6, "passes": 3})
    with pytest.raises(Exception, match="sample_num"):
        SDTSampler(4, sample_num=0)


def test_run_spec_resolves_the_passes_per_method():
    assert RunSpec(method="sdt").sample_num == 1
    assert RunSpec(method="mtt").sample_num == 3
    assert RunSpec(method="sdt", sample_num=3).sample_num == 3
    assert deployment_sampler("sdt", 10) == SDTSampler(10)
    assert deployment_sampler("sdt", 10, sample_num=3) == SDTSampler(10, 3)
    assert deployment_sampler("mtt", 10).sample_num == 3


def test_three_identical_sdt_passes_equal_one_pass_with_the_loss_times_three():
    torch.manual_seed(0)
    net = tiny_staged_net()  # Linear-BN-LIF stages: spikes, BN in train mode
    x = (torch.rand(3, 8, 2, 6, 6) < 0.3).float()  # [T, B, C, H, W]
    y = torch.arange(8) % 3
    a, b = net, copy.deepcopy(net)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        train_step(a, x, y, SDTSampler(3, sample_num=3).sample(random.Random(0), 2), opt_a)
        train_step(
            b,
            x,
            y,
            SDTSampler(3).sample(random.Random(0), 2),
            opt_b,
            loss_fn=lambda out, target: 3 * time_averaged_loss(out, target),
        )
    grads = [(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters())]
    assert all(g is not None and g.abs().sum() > 0 for g, _ in grads)  # the net did learn something
    for (ga, gb), (pa, pb) in zip(grads, zip(a.parameters(), b.parameters())):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # what differs: BN's running statistics were updated once per pass
    assert not torch.allclose(
        a.state_dict()["stages.0.2.num_batches_tracked"].float(),
        b.state_dict()["stages.0.2.num_batches_tracked"].float(),
    )


def test_fit_makes_sample_num_forward_passes_per_step():
    net = tiny_staged_net()
    calls = []
    net.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["time_config"]), with_kwargs=True)
    train, _ = make_frame_loaders(n_train=32, t=2, batch=16)
    fit(net, train, SDTSampler(2, sample_num=3), TrainOptions(epochs=1), progress=False)
    assert calls == [(2, 2)] * 6  # 2 steps x 3 passes


def test_resume_with_another_number_of_sdt_passes_is_refused(tmp_path):
    train, _ = make_frame_loaders(n_train=32, t=2, batch=16)
    opts = TrainOptions(epochs=1)
    fit(tiny_staged_net(), train, SDTSampler(2, 3), opts, run_dir=tmp_path / "a", progress=False)
    check_resume(tmp_path / "a", opts, SDTSampler(2, 3))  # the same passes: accepted
    with pytest.raises(ConfigError, match="sampler differs"):
        check_resume(tmp_path / "a", opts, SDTSampler(2, 1))

    class RecordedBeforePasses(SDTSampler):  # how an SDT checkpoint of an earlier version reads
        def describe(self):
            return {"method": "sdt", "t": self.t}

    fit(tiny_staged_net(), train, RecordedBeforePasses(2), opts, run_dir=tmp_path / "b", progress=False)
    check_resume(tmp_path / "b", opts, SDTSampler(2))  # it made one pass
    with pytest.raises(ConfigError, match="sampler differs"):
        check_resume(tmp_path / "b", opts, SDTSampler(2, 3))


def test_cli_records_the_sdt_passes_and_refuses_a_resume_that_changes_them(tmp_path, capsys, monkeypatch):
    import flexsnn.runs.evaluate as run_evaluate
    import flexsnn.runs.train as run_train

    loaders = make_frame_loaders(n_train=32, n_test=16, t=2, batch=16)
    monkeypatch.setattr(run_train, "build_loaders", lambda spec, shuffle_seed=None: loaders)
    monkeypatch.setattr(run_evaluate, "build_loaders", lambda spec, shuffle_seed=None: loaders)
    run = tmp_path / "sdt3"
    common = [
        "--model",
        "digits_mlp",
        "--method",
        "sdt",
        "--t-max",
        "2",
        "--batch-size",
        "16",
        "--calib-batches",
        "2",
        "--quiet",
    ]
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("model_kwargs: {in_shape: [2, 6, 6], num_classes: 3, hidden: [16], pool: 1}\n")
    argv = ["train", "--config", str(tiny), *common, "--epochs", "1", "--out", str(run)]
    assert main([*argv, "--sample-num", "3"]) == 0
    assert "s = 3" in capsys.readouterr().out
    saved = json.loads((run / "run_spec.json").read_text())
    assert saved["run"]["sample_num"] == 3 and saved["sampler"] == {"method": "sdt", "t": 2, "sample_num": 3}
    assert json.loads((run / "config.json").read_text())["sampler"]["sample_num"] == 3
    # --resume takes the recorded passes; another s is refused with one line, nothing written
    resumed = spec_from_args(build_parser().parse_args([*argv, "--resume"]))
    assert resumed.sample_num == 3
    before = (run / "config.json").read_bytes()
    assert main([*argv, "--resume", "--sample-num", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sampler differs" in err and "'sample_num': 2" in err
    assert (run / "config.json").read_bytes() == before
    # default SDT: one pass, recorded as such
    assert main([*argv, "--out", str(tmp_path / "sdt1")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "sdt1" / "run_spec.json").read_text())["sampler"]["sample_num"] == 1
    # a run recorded before SDT had passes (run.sample_num 3 was unused, the sampler made one)
    old = tmp_path / "old"
    old.mkdir()
    (old / "run_spec.json").write_text(
        json.dumps({"run": {**saved["run"], "sample_num": 3}, "sampler": {"method": "sdt", "t": 2}})
    )
    legacy = spec_from_args(build_parser().parse_args(["train", "--out", str(old), "--resume"]))
    assert (legacy.method, legacy.sample_num) == ("sdt", 1)


def test_deploy_prepare_sdt_passes_default_one_and_are_recorded(tmp_path):
    parser = build_parser()

    def options(*flags):
        return prepare_options(
            parser.parse_args(["deploy", "prepare", "--run", "r", "--out", str(tmp_path / "o"), *flags])
        )

    assert options()["sample_num"] is None  # the method's default
    assert options("--method", "sdt", "--sample-num", "3")["sample_num"] == 3
    out = tmp_path / "o"
    out.mkdir()
    # resuming a fine-tune recorded before SDT had passes: it made one
    (out / "deploy_spec.json").write_text(
        json.dumps(
            {
                "method": "sdt",
                "t": 4,
                "t_left": 3,
                "t_right": 0,
                "sample_num": 3,
                "options": {},
                "sampler": {"method": "sdt", "t": 4},
            }
        )
    )
    assert options("--resume")["sample_num"] == 1
    (out / "deploy_spec.json").write_text(
        json.dumps(
            {
                "method": "sdt",
                "t": 4,
                "t_left": 3,
                "t_right": 0,
                "sample_num": 3,
                "options": {},
                "sampler": {"method": "sdt", "t": 4, "sample_num": 3},
            }
        )
    )
    assert options("--resume")["sample_num"] == 3
