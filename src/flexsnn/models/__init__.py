"""Model zoo: ``build_model(name, **kwargs) -> StagedNet``, every model a staged SNN.

========== ============ ====================================================== =========
name       input        architecture                                            stages
========== ============ ====================================================== =========
digits_mlp frames 2x34  avg-pool 2, Linear 578-256-128 (+BN1d+LIF), head 10     2
digits_conv frames 2x34 Conv 16/s2, Conv 32/s2, Linear 128 (+BN+LIF), head 10   3
resnet18   static 3x32  CIFAR ResNet-18 (LIF), one stage per block              8
resnet19   static 3x32  CIFAR ResNet-19 (LIF), one stage per block, pool + FC   8
vgg14      static 3x32  13 conv (+BN+LIF) + Linear, one conv per stage          13
vgg9_dvs   frames 2x32  8 conv + Linear; ``deployable=True``: bias-free IF      4
nmnist_net frames 2x34  deployable 3 conv + FC (~6k weights)                    2
gesture_net frames 2x128 deployable 4 conv + 2 FC (48,768 parameters), trimmed  3
========== ============ ====================================================== =========

The paper's models as its authors build them: ResNet-19 ends global pool -> Linear(512, C)
(12,569,226 parameters on CIFAR-10), VGG-14 has one stage per conv, and ``gesture_net`` is
their DVS Gesture net (input trimmed to the first T_1 frames, hard TTMs between stages).

Time-stepped models use ``LIF(v_th=1, decay=0.5, reset="hard")``; deployable ones
``IF(v_th=1, reset="subtract", multi_spike=True, v_min=-1)``. Every builder takes
``neuron={...}`` to override neuron arguments (e.g. ``{"decay": 0.25}``), ``ttm_mode`` (the
stage boundaries' TTM) and ``input_ttm_mode`` (frames input -> stage 1; default: ``ttm_mode``,
``"trim"`` for ``gesture_net``); ResNets/VGGs take a ``width`` multiplier so tests can build
tiny ones.

:func:`build_model` records ``net.model_spec = {"name": ..., "kwargs": {...}}`` (JSON), from
which a checkpoint rebuilds the same architecture. The kwargs always hold the TTM modes the
net uses (``ttm_mode``, and ``input_ttm_mode`` for frames input), so a checkpoint keeps its
temporal protocol even if a builder's default changes.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from flexsnn.errors import ConfigError, InputError
from flexsnn.io import import_factory, is_import_path, mark_factory
from flexsnn.models.event_nets import gesture_net, nmnist_net
from flexsnn.models.resnet import BasicBlock, resnet18, resnet19
from flexsnn.models.small import digits_conv, digits_mlp
from flexsnn.models.vgg import vgg9_dvs, vgg14
from flexsnn.staged import StagedNet

MODELS: dict[str, Callable[..., StagedNet]] = {
    "digits_mlp": digits_mlp,
    "digits_conv": digits_conv,
    "resnet18": resnet18,
    "resnet19": resnet19,
    "vgg14": vgg14,
    "vgg9_dvs": vgg9_dvs,
    "nmnist_net": nmnist_net,
    "gesture_net": gesture_net,
}


def model_factory(fn):
    """Mark ``fn(**kwargs) -> StagedNet`` as a model factory: ``--model package.module:fn`` (and
    a run config naming it) builds the model with it, and a saved run reloads through it.

    The net it returns records ``model_spec = {"name": "package.module:fn", "kwargs": ...}``
    (keyword arguments only, JSON values), so ``flexsnn.train.save_model`` writes a config
    that ``load_model`` / every CLI verb rebuilds it from."""

    @functools.wraps(fn)
    def build(**kwargs):
        net = fn(**kwargs)
        if isinstance(net, StagedNet):
            try:
                spec_kwargs = json.loads(json.dumps(kwargs))
            except (TypeError, ValueError) as exc:
                raise InputError(f"model factory arguments must be JSON values: {exc}") from None
            net.model_spec = {"name": f"{fn.__module__}:{fn.__name__}", "kwargs": spec_kwargs}
        return net

    return mark_factory("model")(build)


def model_builder(name: str):
    """The builder of zoo model ``name``, or the marked factory an import path names."""
    if name in MODELS:
        return MODELS[name]
    if is_import_path(name):
        return import_factory(name, "model", "model")
    raise InputError(
        f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}, "
        "or an import path 'package.module:factory' of a @model_factory function"
    )


def build_model(name: str, **kwargs: Any) -> StagedNet:
    """Build zoo model ``name`` with the builder's keyword arguments; sets ``net.model_spec``.

    Raises InputError for an unknown name (listing the choices), an unknown keyword (listing
    the accepted ones) or kwargs that are not JSON-serialisable (the spec must be storable).
    """
    builder = model_builder(name)
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"model {name!r} got unknown argument(s) {unknown}; accepted: {accepted}")
    try:
        spec_kwargs = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise InputError(f"model arguments must be JSON values (numbers, strings, lists, dicts): {exc}") from None
    net = builder(**kwargs)
    if not isinstance(net, StagedNet):
        raise ConfigError(
            f"model factory {name!r} returned {type(net).__name__}, expected a flexsnn StagedNet "
            "(build it with flexsnn.staged.staged_from_layers or StagedNet)"
        )
    if "ttm_mode" in accepted:
        spec_kwargs.setdefault("ttm_mode", net.ttm_mode)
    if "input_ttm_mode" in accepted and net.input_kind == "frames":
        spec_kwargs.setdefault("input_ttm_mode", net.input_ttm_mode)
    net.model_spec = {"name": name, "kwargs": spec_kwargs}
    return net


__all__ = [
    "MODELS",
    "BasicBlock",
    "build_model",
    "model_builder",
    "model_factory",
    "digits_conv",
    "digits_mlp",
    "gesture_net",
    "nmnist_net",
    "resnet18",
    "resnet19",
    "vgg14",
    "vgg9_dvs",
]
