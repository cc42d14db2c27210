"""The bias-removal fine-tune (SDT or MTT) of a model.

After :func:`flexsnn.deploy.remove_biases` (biases and BN means zeroed, BN folded into the
weights, biases frozen), the network is fine-tuned with its biases held at zero (PAPER.md,
"Deployment path", step 2):

- SDT: every stage at the input's ``T`` on every iteration;
- MTT: ``sample_num`` configurations per iteration; the first stage stays at the input's
  ``T`` and every other stage draws its T uniformly from ``[T - t_left, T + t_right]``
  (clipped at 1). The paper's event-driven recipe is ``t_left = T - 1, t_right = 0``, i.e.
  other stages from ``[1, T]`` (the default).

At the end the model is checked again (:func:`flexsnn.deploy.check_bias_free`: no BN came
back, every bias is still zero). The same on run folders: :func:`flexsnn.runs.prepare_deployment`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from torch import nn

from flexsnn.deploy.bias_removal import check_bias_free, fold_batchnorm, remove_biases
from flexsnn.errors import InputError, check_choice, check_positive_int
from flexsnn.train import MTTSampler, SDTSampler, TrainOptions, fit

__all__ = ["DEPLOY_METHODS", "deployment_sampler", "finetune_bias_free"]

DEPLOY_METHODS = ("sdt", "mtt")


def deployment_sampler(method: str, t: int, t_left: int | None = None, t_right: int = 0, sample_num: int = 3):
    """The sampler of the bias-free fine-tune: SDT at ``t``, or MTT with stage 1 pinned to ``t``.

    MTT draws the other stages from ``[max(1, t - t_left), t + t_right]``; ``t_left``
    defaults to ``t - 1`` (so ``[1, t]`` with ``t_right = 0``).
    """
    check_choice(method, "method", DEPLOY_METHODS)
    t = check_positive_int(t, "t")
    if method == "sdt":
        return SDTSampler(t)
    t_left = t - 1 if t_left is None else t_left
    if isinstance(t_left, bool) or not isinstance(t_left, int) or t_left < 0:
        raise InputError(f"t_left (L) must be an int >= 0, got {t_left!r}")
    if isinstance(t_right, bool) or not isinstance(t_right, int) or t_right < 0:
        raise InputError(f"t_right (R) must be an int >= 0, got {t_right!r}")
    return MTTSampler(t_min=max(1, t - t_left), t_max=t + t_right, sample_num=sample_num, first_stage_t=t)


def finetune_bias_free(
    model: nn.Module,
    train_loader: Iterable,
    method: str = "mtt",
    t: int = 10,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int = 3,
    options: Any = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Bias removal (if not done yet) then the bias-free fine-tune of ``model``, in place.

    options: a :class:`flexsnn.train.TrainOptions` (default: 3 epochs of AdamW, lr 1e-3, no
    weight decay, cosine). run_dir: where :func:`flexsnn.train.fit` checkpoints (resumable).
    Returns the per-epoch history. Afterwards the model is still bias-free (checked).
    """
    sampler = deployment_sampler(method, t, t_left, t_right, sample_num)
    options = options or TrainOptions(epochs=3, optimizer="adamw", lr=1e-3, weight_decay=0.0)
    remove_biases(model)
    history = fit(model, train_loader, sampler, options, run_dir=run_dir, resume=resume, progress=progress)
    fold_batchnorm(model)  # "fold again": a no-op unless something added BN back
    check_bias_free(model)
    return history
