"""Shared fixtures: tiny models and loaders so tests run in seconds on 2 cores."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Generated datasets are cached once per test session, never in the user's home.
    monkeypatch.setenv("FLEXSNN_CACHE", str(tmp_path_factory.getbasetemp() / "flexsnn-cache"))


def make_frame_loaders(n_train=64, n_test=32, t=4, shape=(2, 6, 6), classes=3, batch=16, seed=0):
    """Synthetic event-count frames [N, T, C, H, W] whose class sets which quadrant is active."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % classes
        x = (torch.rand(n, t, *shape, generator=g) < 0.1).float()
        for i, label in enumerate(y.tolist()):
            x[i, :, :, label * 2 : (label * 2) + 2, :] += (
                torch.rand(t, shape[0], 2, shape[2], generator=g) < 0.6
            ).float()
        return TensorDataset(x, y)

    train = DataLoader(split(n_train), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    test = DataLoader(split(n_test), batch_size=batch)
    return train, test


@pytest.fixture
def frame_loaders():
    return make_frame_loaders()


def tiny_staged_net(bn=True, classes=3, shape=(2, 6, 6)):
    from torch import nn

    from flexsnn.neurons import LIF
    from flexsnn.staged import staged_from_layers

    c, h, w = shape
    layers = [nn.Flatten(), nn.Linear(c * h * w, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers.append(LIF())
    boundary = len(layers)
    layers += [nn.Linear(16, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [LIF()]
    return staged_from_layers(layers, [boundary], head=nn.Linear(16, classes), input_kind="frames")


TINY_NMNIST_KWARGS = {"num_classes": 3, "in_size": 8, "channels": [4, 4, 4]}


def tiny_nmnist_loaders(t=4):
    """Frames [t, 2, 8, 8] of 3 classes for ``nmnist_net(**TINY_NMNIST_KWARGS)``: 32 train, 16 test."""
    return make_frame_loaders(n_train=32, n_test=16, t=t, shape=(2, 8, 8), classes=3, batch=16)


def train_tiny_nmnist_run(folder, t=4, calib_batches=2, loaders=None):
    """A one-epoch SDT run of a tiny nmnist_net at T = ``t`` in ``folder`` (returned)."""
    from flexsnn.runs import RunSpec, train_run

    spec = RunSpec(
        model="nmnist_net",
        model_kwargs=TINY_NMNIST_KWARGS,
        method="sdt",
        t_min=1,
        t_max=t,
        epochs=1,
        batch_size=16,
        calib_batches=calib_batches,
    )
    train_run(spec, folder, progress=False, loaders=loaders or tiny_nmnist_loaders(t))
    return folder
