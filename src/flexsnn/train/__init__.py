"""Training: TimeConfig samplers (SDT, NMT, MTT), the loop, BN calibration, checkpoints."""

from flexsnn.data.encoding import model_input
from flexsnn.train.bn_calibration import CalibrateBN, batchnorm_layers, calibrate_bn, fixed_calibration_loader
from flexsnn.train.checkpoint import load_model, save_model
from flexsnn.train.distributed import calibrate_bn_synced, distributed_loader, init_distributed, wrap_ddp
from flexsnn.train.logging import MetricsLogger
from flexsnn.train.loop import TrainOptions, fit, time_averaged_loss, train_step
from flexsnn.train.samplers import (
    METHODS,
    MTTSampler,
    NMTSampler,
    SDTSampler,
    default_sample_num,
    make_sampler,
    sampler_from_dict,
)

__all__ = [
    "CalibrateBN",
    "MetricsLogger",
    "calibrate_bn_synced",
    "distributed_loader",
    "fixed_calibration_loader",
    "init_distributed",
    "wrap_ddp",
    "METHODS",
    "MTTSampler",
    "NMTSampler",
    "SDTSampler",
    "TrainOptions",
    "batchnorm_layers",
    "calibrate_bn",
    "default_sample_num",
    "fit",
    "load_model",
    "make_sampler",
    "model_input",
    "sampler_from_dict",
    "save_model",
    "time_averaged_loss",
    "train_step",
]
