"""Bias removal: zero every bias, fold BatchNorm into the weights, freeze the biases.

Event-driven chips (Speck and the paper's simulator) have no biases, so a network trained
with biases and BatchNorm is prepared in two steps before its bias-free fine-tune (PAPER.md,
"Deployment path"):

1. :func:`zero_biases`: every conv / linear bias, every BN shift (beta) and every BN running
   mean is set to zero. This changes the network's function (accuracy drops); the fine-tune
   recovers it.
2. :func:`fold_batchnorm`: every BatchNorm that directly follows a conv or linear layer
   (``nn.Identity`` / ``nn.Dropout`` in between are allowed) is folded into that layer,
   exactly as an eval-mode BN computes::

       scale = gamma / sqrt(running_var + eps)          (gamma = 1 without affine)
       W'    = W * scale      (per output channel)
       b'    = (b - running_mean) * scale + beta

   and the BN module is replaced by ``nn.Identity``, so BN can never be re-estimated (or
   "calibrated") afterwards. After step 1 the folded bias is exactly zero.

:func:`remove_biases` runs both and then :func:`freeze_biases` (``requires_grad = False``
on the zeroed biases, so an optimizer built from trainable parameters never touches them).
The fine-tune (:mod:`flexsnn.deploy.finetune`) then trains the folded weights directly: the
BN scale lives in the conv weights, so "BN frozen" holds by construction, and the final
"fold again" is a check that no BN and no non-zero bias came back.

All functions modify the model in place and return it (deep-copy first to keep the original).
Tensors stay on the model's device and dtype.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from flexsnn.errors import InputError

__all__ = [
    "BiasFreeReport",
    "bias_free_violations",
    "check_bias_free",
    "fold_batchnorm",
    "freeze_biases",
    "remove_biases",
    "strip_batchnorm",
    "zero_biases",
]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)


def _ordered_leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[nn.Module, str, str, nn.Module]]:
    """Yield ``(parent, attribute, qualified name, leaf)`` in execution order.

    A flexsnn StagedNet runs ``stages`` in order then ``head``; ``nn.Sequential`` and
    ``nn.ModuleList`` run their children in order. Any other module is a leaf.
    """
    if hasattr(module, "stages") and hasattr(module, "head") and not isinstance(module, nn.Sequential):
        stages = module.stages
        for i, stage in enumerate(stages):
            name = f"{prefix}stages.{i}"
            if isinstance(stage, (nn.Sequential, nn.ModuleList)):
                yield from _ordered_leaves(stage, name + ".")
            else:
                yield (stages, str(i), name, stage)
        if module.head is not None:
            if isinstance(module.head, (nn.Sequential, nn.ModuleList)):
                yield from _ordered_leaves(module.head, f"{prefix}head.")
            else:
                yield (module, "head", f"{prefix}head", module.head)
        return
    for attr, child in module.named_children():
        name = f"{prefix}{attr}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            yield from _ordered_leaves(child, name + ".")
        else:
            yield (module, attr, name, child)


def _replace(parent: nn.Module, attr: str, new: nn.Module) -> None:
    if isinstance(parent, (nn.Sequential, nn.ModuleList)):
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def _batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def zero_biases(model: nn.Module) -> nn.Module:
    """Set every conv/linear bias, BN shift (beta) and BN running mean of ``model`` to zero."""
    for module in model.modules():
        if isinstance(module, _WEIGHTED) and module.bias is not None:
            module.bias.zero_()
        elif isinstance(module, _BatchNorm):
            if module.bias is not None:
                module.bias.zero_()
            if module.running_mean is not None:
                module.running_mean.zero_()
    return model


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: _BatchNorm, where: str) -> None:
    if bn.running_var is None or bn.running_mean is None:
        raise InputError(
            f"{where}: BatchNorm without running statistics (track_running_stats=False) cannot be folded; "
            "expected a BN layer with running_mean and running_var"
        )
    if bn.num_features != layer.weight.shape[0]:
        raise InputError(
            f"{where}: BatchNorm has {bn.num_features} features but the preceding layer has "
            f"{layer.weight.shape[0]} output channels"
        )
    var = bn.running_var.to(torch.float64)
    mean = bn.running_mean.to(torch.float64)
    gamma = bn.weight.to(torch.float64) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    weight = layer.weight.to(torch.float64)
    layer.weight.copy_((weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))).to(layer.weight.dtype))
    old_bias = layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros_like(var)
    new_bias = (old_bias - mean) * scale + beta
    if layer.bias is not None:
        layer.bias.copy_(new_bias.to(layer.bias.dtype))
    elif bool((new_bias != 0).any()):
        layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the conv/linear layer right before it; BN becomes ``nn.Identity``.

    Exact for eval-mode BN (see the module docstring). A BN with no conv/linear layer right
    before it (only ``nn.Identity`` / ``nn.Dropout`` may sit in between) raises InputError.
    """
    previous: tuple[str, nn.Module] | None = None
    folded = 0
    for parent, attr, name, leaf in list(_ordered_leaves(model)):
        if isinstance(leaf, _BatchNorm):
            if previous is None:
                raise InputError(
                    f"cannot fold BatchNorm {name!r}: it must directly follow a Conv or Linear layer "
                    "(only Identity/Dropout may sit in between)"
                )
            _fold_into(previous[1], leaf, f"BatchNorm {name!r} after {previous[0]!r}")
            _replace(parent, attr, nn.Identity())
            folded += 1
            previous = None  # a second BN in a row has no layer to fold into
        elif isinstance(leaf, _WEIGHTED):
            previous = (name, leaf)
        elif not isinstance(leaf, _PASS_THROUGH):
            previous = None
    left = _batchnorms(model)
    if left:
        raise InputError(
            f"BatchNorm {left[0][0]!r} is not in the model's layer sequence (stages / head / nn.Sequential) and "
            "cannot be folded"
        )
    _forget_calibration(model)
    return model


def strip_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm by ``nn.Identity`` WITHOUT folding (rebuilds a folded model's structure).

    Used when loading a deployed run: the zoo builds the model with BN, the saved weights
    are those of the folded model, which has none.
    """
    for parent, attr, _, leaf in list(_ordered_leaves(model)):
        if isinstance(leaf, _BatchNorm):
            _replace(parent, attr, nn.Identity())
    _forget_calibration(model)
    return model


def _forget_calibration(model: nn.Module) -> None:
    # Without BN there is nothing to calibrate: a StagedNet must not ask for it any more.
    if not _batchnorms(model) and hasattr(model, "require_calibration"):
        model.require_calibration = False


def freeze_biases(model: nn.Module) -> nn.Module:
    """Zero-valued biases of conv/linear layers stop training (``requires_grad = False``).

    Raises InputError if a bias is not zero (run :func:`zero_biases` or :func:`remove_biases`).
    """
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED) and module.bias is not None:
            if bool((module.bias.detach() != 0).any()):
                raise InputError(f"layer {name!r} has a non-zero bias; run flexsnn.deploy.remove_biases(model) first")
            module.bias.requires_grad_(False)
    return model


def remove_biases(model: nn.Module) -> nn.Module:
    """The bias removal phase: :func:`zero_biases`, :func:`fold_batchnorm`, :func:`freeze_biases`."""
    zero_biases(model)
    fold_batchnorm(model)
    freeze_biases(model)
    check_bias_free(model)
    return model


class BiasFreeReport(list):
    """List of human-readable problems that keep a model from being bias-free (empty = fine)."""


def bias_free_violations(model: nn.Module) -> BiasFreeReport:
    """Every BatchNorm left and every non-zero or trainable bias, as messages."""
    problems = BiasFreeReport()
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            problems.append(f"BatchNorm {name!r} is not folded")
        elif isinstance(module, _WEIGHTED) and module.bias is not None:
            if bool((module.bias.detach() != 0).any()):
                problems.append(f"layer {name!r} has a non-zero bias")
            elif module.bias.requires_grad:
                problems.append(f"layer {name!r} has a trainable bias (not frozen)")
    return problems


def check_bias_free(model: nn.Module) -> nn.Module:
    """Raise InputError unless ``model`` has no BatchNorm and only frozen all-zero biases."""
    problems = bias_free_violations(model)
    if problems:
        raise InputError(
            "model is not bias-free: " + "; ".join(problems) + " (run flexsnn.deploy.remove_biases(model))"
        )
    return model
