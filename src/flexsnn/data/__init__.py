"""Datasets, event streams, binning, input encoding and the loaders that serve them to training.

- :func:`make_loaders` / :func:`load_frames` / :func:`dataset_info`: every dataset by name
  (:data:`DATASETS`: digits_dvs, nmnist, dvs_gesture, dvs_gesture_128, cifar10_dvs, cifar10_dvs_128,
  ncaltech101, cifar10, cifar100), their DataLoaders and model checks (:mod:`.loaders`).
- :class:`DigitsDVS`: the embedded default dataset (sklearn digits seen by a simulated DVS).
- :class:`NMNIST`, :class:`DVSGesture`, :class:`CIFAR10DVS`, :class:`NCaltech101`: real event
  datasets read from the user's disk (:mod:`.event_datasets`, over the file readers of
  :mod:`.readers`); :class:`CIFAR10`, :class:`CIFAR100` from the binary distribution
  (:mod:`.image_datasets`).
- :data:`EVENT_DTYPE`, :func:`make_events`, :func:`check_events`, :func:`check_sensor_size`,
  :func:`sort_by_time`: event streams (:mod:`.events`).
- :func:`to_frames` / :class:`ToFrame` / :func:`spatial_pool` / :class:`SpatialPool`: events ->
  ``[T, P, H, W]`` counts (:mod:`.frames`).
- :func:`model_input`: a loader batch -> the model's time-first input (:mod:`.encoding`).
- Transforms (:mod:`.augment`): CIFAR crop / flip / Cutout / AutoAugment / normalisation and
  DVS frame flips / rolls.

Everything else (binning many samples, cache helpers, registration of new datasets, the
readers) is imported from its submodule.
"""

from flexsnn.data.augment import (
    CIFAR10AutoAugment,
    Compose,
    Cutout,
    RandomCrop,
    RandomFlipFrames,
    RandomHorizontalFlip,
    RandomRollFrames,
)
from flexsnn.data.digits_dvs import DigitsDVS
from flexsnn.data.encoding import model_input
from flexsnn.data.event_datasets import CIFAR10DVS, NMNIST, DVSGesture, NCaltech101
from flexsnn.data.events import EVENT_DTYPE, check_events, check_sensor_size, make_events, sort_by_time
from flexsnn.data.frames import SpatialPool, ToFrame, spatial_pool, to_frames
from flexsnn.data.image_datasets import CIFAR10, CIFAR100, Normalize
from flexsnn.data.loaders import DATASETS, dataset_factory, dataset_info, load_frames, make_loaders

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "CIFAR10DVS",
    "DATASETS",
    "dataset_factory",
    "EVENT_DTYPE",
    "NMNIST",
    "CIFAR10AutoAugment",
    "Compose",
    "Cutout",
    "DVSGesture",
    "DigitsDVS",
    "NCaltech101",
    "Normalize",
    "RandomCrop",
    "RandomFlipFrames",
    "RandomHorizontalFlip",
    "RandomRollFrames",
    "SpatialPool",
    "ToFrame",
    "check_events",
    "check_sensor_size",
    "dataset_info",
    "load_frames",
    "make_events",
    "make_loaders",
    "model_input",
    "sort_by_time",
    "spatial_pool",
    "to_frames",
]
