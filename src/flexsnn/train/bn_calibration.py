"""BatchNorm calibration: re-estimate running statistics at one TimeConfig.

BN statistics depend on the time configuration (a TTM that sums steps changes the scale of
the next stage's input), so after training, and whenever the inference configuration
changes, the running mean/var are reset and re-estimated as a cumulative average over
``num_batches`` training batches in train mode, without gradients (PAPER.md, step 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from flexsnn.data.encoding import model_input
from flexsnn.errors import InputError, check_positive_int
from flexsnn.staged import StagedNet


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def calibrate_bn(
    model: nn.Module,
    loader: Iterable,
    time_config: int | Sequence[int],
    num_batches: int = 10,
    device: str | torch.device | None = None,
) -> None:
    """Reset every BN layer's running stats and re-estimate them at ``time_config``.

    ``loader`` yields ``(x, y)`` batches as the training loader does. The model's train/eval
    mode is restored afterwards and the model is marked as calibrated for ``time_config``.
    """
    check_positive_int(num_batches, "num_batches")
    layers = batchnorm_layers(model)
    cfg = model.normalize_time_config(time_config) if hasattr(model, "normalize_time_config") else time_config
    if layers:
        device = device or next(model.parameters()).device
        momenta = [bn.momentum for bn in layers]
        was_training = model.training
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the calibration batches
        model.train()
        seen = 0
        try:
            for x, _ in loader:
                model(model_input(x.to(device), model), time_config=cfg)
                seen += 1
                if seen >= num_batches:
                    break
        finally:
            for bn, momentum in zip(layers, momenta):
                bn.momentum = momentum
            model.train(was_training)
        if seen == 0:
            raise InputError("loader yielded no batches; BN calibration needs training data")
    if hasattr(model, "mark_calibrated"):
        model.mark_calibrated(cfg)


def fixed_calibration_loader(loader, num_batches: int, seed: int = 0):
    """The same ``num_batches`` shuffled training batches on every pass over the loader.

    Evaluations calibrate BN once per config; drawing the calibration batches from a
    reshuffling loader would make two configs (or two runs of the same evaluation) differ by
    the batches they happened to see. This loader fixes one random subset, in one order.
    """
    from torch.utils.data import DataLoader, Subset

    dataset = getattr(loader, "dataset", None)
    batch_size = getattr(loader, "batch_size", None)
    if dataset is None or batch_size is None:
        return loader  # not a map-style DataLoader: use it as it is
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: num_batches * batch_size].tolist()
    return DataLoader(
        Subset(dataset, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
    )


class CalibrateBN:
    """Re-estimate BN statistics before evaluating, in any loop: ``CalibrateBN(train_loader)``.

    A BN StagedNet trained since its last calibration refuses an eval-mode forward
    (:class:`flexsnn.errors.CalibrationError`): its running statistics were gathered at the
    training loop's mixed time configurations, not at the one being evaluated. This hook
    calibrates at the evaluated config, then the eval forwards run. Plain loop::

        calibrate = CalibrateBN(train_loader, num_batches=10)
        for epoch in range(epochs):
            train_one_epoch(net)
            calibrate(net)            # at net.time_config, or calibrate(net, time_config=4)
            net.eval(); evaluate(net)

    Lightning (``on_validation_start`` / ``on_test_start`` / ``on_predict_start`` find the
    StagedNet inside the LightningModule)::

        class CalibrateBNCallback(CalibrateBN, lightning.pytorch.Callback):
            pass
        trainer = Trainer(callbacks=[CalibrateBNCallback(train_loader, time_config=4)])

    Args:
        loader: training batches ``(x, y)`` (the training loader: calibration needs data the
            statistics should describe). The same ``num_batches`` batches are drawn on every call
            (:func:`fixed_calibration_loader`), so repeated evaluations are comparable.
        time_config: the config to calibrate at; ``None``: the net's current ``time_config``.
        num_batches: calibration batches per call.
        only_if_stale: skip the calibration when the net is already calibrated for the config.
    """

    def __init__(
        self,
        loader: Iterable,
        time_config: int | Sequence[int] | None = None,
        num_batches: int = 10,
        only_if_stale: bool = True,
        seed: int = 0,
    ) -> None:
        self.num_batches = check_positive_int(num_batches, "num_batches")
        self.loader = fixed_calibration_loader(loader, self.num_batches, seed=seed)
        self.time_config = time_config
        self.only_if_stale = bool(only_if_stale)
        self.calls = 0  # calibrations run (skipped ones not counted)

    def __call__(self, model: nn.Module, time_config: int | Sequence[int] | None = None) -> nn.Module:
        """Calibrate ``model`` (a StagedNet, or a module holding one) and return it."""
        net = self._find_net(model)
        cfg = time_config if time_config is not None else self.time_config
        if cfg is None:
            cfg = net.time_config
        if cfg is None:
            raise InputError(
                "CalibrateBN needs a time_config: pass CalibrateBN(..., time_config=T) or set "
                "net.set_time_config(T) first"
            )
        cfg = net.normalize_time_config(cfg)
        if self.only_if_stale and net.bn_calibrated_for == cfg:
            return model
        calibrate_bn(net, self.loader, cfg, num_batches=self.num_batches)
        self.calls += 1
        return model

    @staticmethod
    def _find_net(model: nn.Module) -> StagedNet:
        if isinstance(model, StagedNet):
            return model
        nets = [m for m in model.modules() if isinstance(m, StagedNet)] if isinstance(model, nn.Module) else []
        if len(nets) != 1:
            raise InputError(
                f"CalibrateBN needs a flexsnn StagedNet or a module holding exactly one, "
                f"got {type(model).__name__} holding {len(nets)}"
            )
        return nets[0]

    # Lightning-style hooks: (trainer, pl_module)
    def on_validation_start(self, trainer, pl_module) -> None:
        self(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self(pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self(pl_module)
