"""Paper recipes (recipes/*.yaml): the paper's hyper-parameters, and a one-step smoke run of
every recipe on the embedded data (no real dataset needed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flexsnn.cli import main
from flexsnn.cli.train_cmd import load_config_file
from flexsnn.data.augment import FRAME_AUGMENTATIONS
from flexsnn.errors import ConfigError
from flexsnn.runs import RunSpec, train_run

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(p.name for p in RECIPES.glob("*.yaml"))

# recipe -> (dataset, model, method, t_min, t_max, sample_num): the paper's MTT and deployment path
PAPER = {
    "cifar10_resnet19_mtt.yaml": ("cifar10", "resnet19", "mtt", 1, 6, 3),
    "cifar100_resnet19_mtt.yaml": ("cifar100", "resnet19", "mtt", 1, 6, 3),
    "cifar100_vgg14_mtt.yaml": ("cifar100", "vgg14", "mtt", 1, 5, 3),
    "cifar10dvs_resnet18_mtt.yaml": ("cifar10_dvs_48", "resnet18", "mtt", 1, 10, 3),
    "ncaltech101_resnet18_mtt.yaml": ("ncaltech101_48", "resnet18", "mtt", 1, 10, 3),
    "cifar10dvs_vgg9_deploy.yaml": ("cifar10_dvs_128", "vgg9_dvs", "sdt", None, 10, None),
    "dvsgesture_net_deploy.yaml": ("dvs_gesture_128", "gesture_net", "sdt", None, 40, None),
    "nmnist_net_deploy.yaml": ("nmnist", "nmnist_net", "sdt", None, 10, None),
}
# the authors' training augmentation of event frames (flexsnn.data.augment.FRAME_AUGMENTATIONS)
AUGMENT = {
    "cifar10dvs_resnet18_mtt.yaml": "flip_roll5",  # hflip 0.5 + roll 5 at 48x48
    "ncaltech101_resnet18_mtt.yaml": "flip_or_reverse_roll5",  # hflip 0.25 | reversal 0.25 + roll 5
    "dvsgesture_net_deploy.yaml": "none",
}
# base training of the event-driven recipes: (optimizer, lr, weight_decay, epochs, batch_size, T)
DEPLOY_BASE = {
    "cifar10dvs_vgg9_deploy.yaml": ("adamw", 1e-3, 0.02, 300, 32, 10),
    "dvsgesture_net_deploy.yaml": ("adamw", 5e-4, 0.02, 100, None, 40),
}
# bias-removal fine-tune: every key the recipes may use (documented in recipes/README.md) and
# the paper's values where the authors' code gives them
FINETUNE_KEYS = {
    "method",
    "t",
    "t_left",
    "t_right",
    "sample_num",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "schedule_epochs",
    "augment",
}
FINETUNE = {
    "cifar10dvs_vgg9_deploy.yaml": {
        "method": "mtt",
        "t": 10,
        "t_left": 9,
        "t_right": 0,
        "sample_num": 3,
        "epochs": 60,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.0,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "schedule_epochs": 300,
        "augment": "vflip_roll20",
    },
    "dvsgesture_net_deploy.yaml": {
        "method": "mtt",
        "t": 40,
        "t_left": 39,
        "t_right": 0,
        "sample_num": 3,
        "epochs": 20,
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 0.02,
        "augment": "none",
    },
    "nmnist_net_deploy.yaml": {"method": "mtt", "t": 10, "t_left": 9, "t_right": 0, "sample_num": 3},
}


def test_there_is_one_recipe_per_paper_experiment():
    assert ALL == sorted(PAPER)


@pytest.mark.parametrize("name", ALL)
def test_recipe_has_the_papers_hyper_parameters(name):
    raw = yaml.safe_load((RECIPES / name).read_text())
    spec = RunSpec.from_dict(load_config_file(RECIPES / name))
    dataset, model, method, t_min, t_max, s = PAPER[name]
    assert (spec.dataset, spec.model, spec.method, spec.t_max) == (dataset, model, method, t_max)
    if method == "mtt":
        assert (spec.t_min, spec.sample_num) == (t_min, s)
    assert raw["seeds"] == [1000, 2000, 3000]
    assert spec.amp == "auto"  # mixed precision on CUDA
    assert spec.calib_batches == 10 and spec.schedule == "cosine"
    assert spec.checkpoint_every_steps > 0
    if dataset in ("cifar10", "cifar100"):
        assert (spec.epochs, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay, spec.batch_size) == (
            300,
            "sgd",
            0.1,
            0.9,
            5e-4,
            256,
        )
        assert spec.model_kwargs["num_classes"] == (10 if dataset == "cifar10" else 100)
    assert spec.augment == AUGMENT.get(name, False)
    if model == "resnet18" and spec.model_kwargs["input_kind"] == "frames":
        assert spec.model_kwargs["input_ttm_mode"] == "trim" and spec.frames_t == 10  # the first T_1 of 10 frames
    if name in DEPLOY_BASE:
        optimizer, lr, wd, epochs, batch, t = DEPLOY_BASE[name]
        assert (spec.optimizer, spec.lr, spec.weight_decay, spec.epochs, spec.t_max, spec.frames_t) == (
            optimizer,
            lr,
            wd,
            epochs,
            t,
            t,
        )
        assert batch is None or spec.batch_size == batch
    if name in FINETUNE:
        ft = raw["finetune"]
        assert set(ft) <= FINETUNE_KEYS, sorted(set(ft) - FINETUNE_KEYS)
        assert {k: ft.get(k) for k in FINETUNE[name]} == FINETUNE[name]
        assert ft["t"] == spec.frames_t  # the fine-tune keeps the data's T
        assert spec.model_kwargs.get("deployable", True) is True
    else:
        assert "finetune" not in raw


def test_recipe_augmentations_and_finetune_keys_are_known_and_documented():
    readme = (RECIPES / "README.md").read_text()
    assert "../" not in readme and "PAPER.md" not in readme  # no links outside the repository
    for key in FINETUNE_KEYS:
        assert f"`{key}`" in readme, key
    for name in FRAME_AUGMENTATIONS:
        assert f"`{name}`" in readme, name
    for name in ALL:
        raw = yaml.safe_load((RECIPES / name).read_text())
        for section in ("run", "finetune"):
            augment = (raw.get(section) or {}).get("augment")
            assert augment is None or augment in FRAME_AUGMENTATIONS, (name, section, augment)
        assert "PAPER.md" not in (RECIPES / name).read_text()


def test_finetune_cosine_horizon_leaves_the_lr_near_its_start():
    # the authors' 300-epoch cosine over a 60-epoch fine-tune: lr 1e-3 ends near 0.9e-3
    ft = yaml.safe_load((RECIPES / "cifar10dvs_vgg9_deploy.yaml").read_text())["finetune"]
    end = ft["lr"] * 0.5 * (1 + math.cos(math.pi * ft["epochs"] / ft["schedule_epochs"]))
    assert 0.9e-3 < end < 0.91e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_smoke_variant_trains_one_step_on_the_embedded_data(name, tmp_path):
    spec = RunSpec.from_dict(load_config_file(RECIPES / name, smoke=True))
    base = RunSpec.from_dict(load_config_file(RECIPES / name))
    assert spec.dataset == "digits_dvs" and spec.device == "cpu" and spec.max_steps_per_epoch == 1
    assert (spec.model, spec.method) == (base.model, base.method)  # the recipe's own architecture
    model, config = train_run(spec, tmp_path / "run", progress=False)
    assert [row["steps"] for row in config["history"]] == [1]
    assert config["run"]["model"] == base.model
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["name"] == base.model
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,train_loss,train_acc")


@pytest.mark.slow
def test_cli_runs_a_smoke_recipe_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(RECIPES / "nmnist_net_deploy.yaml"), "--smoke", "--out", str(out), "--quiet"])
        == 0
    )
    for f in (
        "model.safetensors",
        "checkpoint.safetensors",
        "results.json",
        "metrics.json",
        "metrics.csv",
        "train.log",
        "report.md",
        "accuracy_vs_T.png",
    ):
        assert (out / f).is_file(), f
    assert set(json.loads((out / "results.json").read_text())["sdt"]) == {"1", "2"}
    assert "| T | SDT (%) |" in (out / "report.md").read_text()


def test_recipe_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {epochs: 1}\nsmoky: {}\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['smoky'\]"):
        load_config_file(bad)
    plain = tmp_path / "plain.yaml"
    plain.write_text("epochs: 1\n")
    assert load_config_file(plain) == {"epochs": 1}
    with pytest.raises(ConfigError, match="`smoke:` section"):
        load_config_file(plain, smoke=True)
    nosmoke = tmp_path / "nosmoke.yaml"
    nosmoke.write_text("run: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="no `smoke:` mapping"):
        load_config_file(nosmoke, smoke=True)
    assert main(["train", "--smoke", "--out", str(tmp_path / "r")]) == 2
    assert "--smoke needs --config" in capsys.readouterr().err


def test_smoke_model_kwargs_are_merged_over_the_recipes():
    options = load_config_file(RECIPES / "ncaltech101_resnet18_mtt.yaml", smoke=True)
    assert options["model_kwargs"] == {
        "num_classes": 101,
        "in_channels": 2,
        "input_kind": "frames",
        "group_block_num": 1,
        "input_ttm_mode": "trim",
        "width": 0.0625,
    }


@pytest.mark.slow
def test_python_dash_m_flexsnn_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "flexsnn", "train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "torchrun --nproc_per_node" in done.stdout and "--smoke" in done.stdout


@pytest.mark.parametrize("name", sorted(FINETUNE))
def test_deploy_recipe_finetune_section_builds_its_optimizer_and_schedule(name):
    # what `flexsnn deploy prepare --config RECIPE` reads, turned into the optimizer and schedule fit() uses
    import torch

    from flexsnn.runs import read_finetune_section
    from flexsnn.train import TrainOptions
    from flexsnn.train.loop import build_optimizer, build_scheduler

    ft = read_finetune_section(RECIPES / name)
    assert ft == {**FINETUNE[name], **{k: v for k, v in ft.items() if k not in FINETUNE[name]}}
    opts = TrainOptions(
        epochs=ft["epochs"],
        optimizer=ft["optimizer"],
        lr=ft["lr"],
        momentum=ft.get("momentum", 0.9),
        weight_decay=ft["weight_decay"],
        schedule=ft["schedule"],
        schedule_epochs=ft.get("schedule_epochs", 0),
    )
    net = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(net, opts)
    scheduler = build_scheduler(optimizer, opts)
    group = optimizer.param_groups[0]
    assert type(optimizer).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[ft["optimizer"]]
    assert group["weight_decay"] == ft["weight_decay"]
    if ft["optimizer"] == "sgd":
        assert group["momentum"] == ft["momentum"]
    for _ in range(ft["epochs"]):
        optimizer.step()
        scheduler.step()
    ratio = group["lr"] / ft["lr"]
    horizon = ft.get("schedule_epochs") or ft["epochs"]
    assert ratio == pytest.approx(0.5 * (1 + math.cos(math.pi * ft["epochs"] / horizon)), rel=1e-6)
    if name == "cifar10dvs_vgg9_deploy.yaml":
        assert 0.90 < ratio < 0.91  # 60 of 300 cosine epochs
    else:
        assert ratio < 1e-6  # the horizon is the fine-tune itself: the lr reaches 0


def test_finetune_section_is_refused_when_missing_or_unknown(tmp_path):
    from flexsnn.runs import read_finetune_section

    (tmp_path / "a.yaml").write_text("run: {model: nmnist_net}\n")
    with pytest.raises(ConfigError, match="no `finetune:` mapping"):
        read_finetune_section(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("finetune: {method: mtt, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown finetune key\(s\) \['learning_rate'\]"):
        read_finetune_section(tmp_path / "b.yaml")
