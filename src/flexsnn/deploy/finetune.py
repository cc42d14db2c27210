"""The bias-removal fine-tune (SDT or MTT) of a model.

After :func:`flexsnn.deploy.remove_biases` (biases and BN means zeroed, BN folded into the
weights, biases frozen), the network is fine-tuned with its biases held at zero (PAPER.md,
"Deployment path", step 2):

- SDT: every stage at the input's ``T`` on every iteration (``sample_num`` identical passes,
  default 1);
- MTT: ``sample_num`` configurations per iteration; stages draw their T uniformly from
  ``[T - t_left, T + t_right]`` (clipped at 1). The paper's event-driven recipe is
  ``t_left = T - 1, t_right = 0``, i.e. stages from ``[1, T]`` (the default). Which entry is
  pinned at ``T`` is ``pin``:

  - ``"input"`` (default, the paper's authors' scheme): the INPUT keeps the data's ``T``
    (frames binned at ``T``) and EVERY stage is drawn; the net's input TTM maps ``T`` to the
    drawn ``T_1``;
  - ``"stage1"``: stage 1 also stays at ``T`` and only the later stages are drawn (flexsnn's
    earlier scheme; on a 2-stage net it mixes one stage).

At the end the model is checked again (:func:`flexsnn.deploy.check_bias_free`: no BN came
back, every bias is still zero). The same on run folders: :func:`flexsnn.runs.prepare_deployment`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch import nn

from flexsnn.deploy.bias_removal import check_bias_free, fold_batchnorm, remove_biases
from flexsnn.errors import InputError, check_choice, check_positive_int
from flexsnn.train import MTTSampler, SDTSampler, TrainOptions, default_sample_num, fit

__all__ = ["DEPLOY_METHODS", "PINS", "deployment_sampler", "finetune_bias_free"]

DEPLOY_METHODS = ("sdt", "mtt")
#: What MTT keeps at T: the input only (every stage drawn) or also stage 1.
PINS = ("input", "stage1")


def deployment_sampler(
    method: str,
    t: int,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int | None = None,
    pin: str = "input",
):
    """The sampler of the bias-free fine-tune on frames binned at ``t``: SDT at ``t``, or MTT.

    MTT draws stages from ``[max(1, t - t_left), t + t_right]``; ``t_left`` defaults to
    ``t - 1`` (so ``[1, t]`` with ``t_right = 0``). ``pin="input"`` (default): every stage is
    drawn, the input stays at the data's ``t``; ``pin="stage1"``: stage 1 is pinned to ``t``
    too (``MTTSampler.first_stage_t``). SDT ignores ``pin``. ``sample_num``: passes per
    iteration, MTT configs (default 3) or SDT identical passes (default 1).
    """
    check_choice(method, "method", DEPLOY_METHODS)
    t = check_positive_int(t, "t")
    check_choice(pin, "pin", PINS)
    sample_num = default_sample_num(method) if sample_num is None else sample_num
    if method == "sdt":
        return SDTSampler(t, sample_num)
    t_left = t - 1 if t_left is None else t_left
    if isinstance(t_left, bool) or not isinstance(t_left, int) or t_left < 0:
        raise InputError(f"t_left (L) must be an int >= 0, got {t_left!r}")
    if isinstance(t_right, bool) or not isinstance(t_right, int) or t_right < 0:
        raise InputError(f"t_right (R) must be an int >= 0, got {t_right!r}")
    return MTTSampler(
        t_min=max(1, t - t_left), t_max=t + t_right, sample_num=sample_num, first_stage_t=t if pin == "stage1" else None
    )


def finetune_bias_free(
    model: nn.Module,
    train_loader: Iterable,
    method: str = "mtt",
    t: int = 10,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int | None = None,
    options: Any = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    pin: str = "input",
) -> list[dict[str, Any]]:
    """Bias removal (if not done yet) then the bias-free fine-tune of ``model``, in place.

    options: a :class:`flexsnn.train.TrainOptions` (default: 3 epochs of AdamW, lr 1e-3, no
    weight decay, cosine). run_dir: where :func:`flexsnn.train.fit` checkpoints (resumable).
    Returns the per-epoch history. Afterwards the model is still bias-free (checked).
    pin: ``"input"`` (every stage drawn) or ``"stage1"`` (see :func:`deployment_sampler`).
    """
    sampler = deployment_sampler(method, t, t_left, t_right, sample_num, pin)
    options = options or TrainOptions(epochs=3, optimizer="adamw", lr=1e-3, weight_decay=0.0)
    remove_biases(model)
    history = fit(model, train_loader, sampler, options, run_dir=run_dir, resume=resume, progress=progress)
    fold_batchnorm(model)  # "fold again": a no-op unless something added BN back
    check_bias_free(model)
    return history
