"""Datasets, input encodings, augmentation and the loaders that serve them to training.

- :func:`make_loaders` / :func:`load_frames` / :func:`dataset_info`: every dataset by name
  (:data:`DATASETS`: digits_dvs, nmnist, dvs_gesture, cifar10_dvs, cifar10_dvs_128,
  ncaltech101, cifar10, cifar100), their DataLoaders and model checks (:mod:`.loaders`).
- :class:`DigitsDVS`: the embedded default dataset (sklearn digits seen by a simulated DVS).
- :class:`NMNIST`, :class:`DVSGesture`, :class:`CIFAR10DVS`, :class:`NCaltech101`: real event
  datasets read from the user's disk (:mod:`.event_datasets`); :class:`CIFAR10`,
  :class:`CIFAR100` from the binary distribution (:mod:`.image_datasets`).
- :func:`to_frames` / :class:`ToFrame` / :func:`spatial_pool`: event -> ``[T, P, H, W]`` counts.
- :func:`direct_encode`: static ``[B, ...]`` -> time-first ``[T, B, ...]``.
- :mod:`.augment`: CIFAR crop / flip / Cutout / AutoAugment and DVS flips / rolls.
"""
from flexsnn.data.augment import (
    CIFAR10_POLICY,
    CIFAR10AutoAugment,
    Compose,
    Cutout,
    RandomCrop,
    RandomFlipFrames,
    RandomHorizontalFlip,
    RandomRollFrames,
    augment_frames_batch,
    autoaugment_magnitude,
    autoaugment_op,
    cifar_train_transform,
    cutout,
    dvs_train_transform,
    hflip,
    pad_crop,
    shift2d,
)
from flexsnn.data.cache import cache_dir, cache_key, cached_arrays
from flexsnn.data.digits_dvs import DigitsDVS, DVSSimParams
from flexsnn.data.events import EVENT_DTYPE, check_events, check_sensor_size, make_events, sort_by_time
from flexsnn.data.encoding import direct_encode, frames_to_time_first
from flexsnn.data.event_datasets import (
    CIFAR10DVS,
    EVENT_DATASETS,
    NMNIST,
    DVSGesture,
    EventDataset,
    NCaltech101,
    bin_event_dataset,
    bin_event_samples,
    event_frames,
    per_class_split,
    read_aedat2_dvs128,
    read_aedat31_polarity,
    read_atis_bin,
    read_events_npz,
    read_tonic_gesture_npy,
)
from flexsnn.data.frames import SpatialPool, ToFrame, spatial_pool, to_frames
from flexsnn.data.image_datasets import CIFAR10, CIFAR100, Normalize, normalize, read_cifar_records
from flexsnn.data.loaders import (
    DATASETS,
    AugmentFramesCollate,
    DatasetEntry,
    DatasetInfo,
    TorchSeededTransform,
    check_model_input,
    dataset_info,
    dataset_model_kwargs,
    load_frames,
    make_loaders,
    register_frame_dataset,
    register_image_dataset,
)
from flexsnn.errors import DatasetNotFoundError

__all__ = [
    "AugmentFramesCollate",
    "CIFAR10",
    "CIFAR100",
    "CIFAR10AutoAugment",
    "CIFAR10DVS",
    "CIFAR10_POLICY",
    "Compose",
    "Cutout",
    "DATASETS",
    "DVSGesture",
    "DVSSimParams",
    "DatasetEntry",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DigitsDVS",
    "EVENT_DATASETS",
    "EVENT_DTYPE",
    "EventDataset",
    "NCaltech101",
    "NMNIST",
    "Normalize",
    "RandomCrop",
    "RandomFlipFrames",
    "RandomHorizontalFlip",
    "RandomRollFrames",
    "SpatialPool",
    "ToFrame",
    "TorchSeededTransform",
    "augment_frames_batch",
    "autoaugment_magnitude",
    "autoaugment_op",
    "bin_event_dataset",
    "bin_event_samples",
    "cache_dir",
    "cache_key",
    "cached_arrays",
    "check_model_input",
    "cifar_train_transform",
    "cutout",
    "dataset_info",
    "dataset_model_kwargs",
    "direct_encode",
    "dvs_train_transform",
    "event_frames",
    "frames_to_time_first",
    "hflip",
    "load_frames",
    "make_loaders",
    "normalize",
    "pad_crop",
    "per_class_split",
    "read_aedat2_dvs128",
    "read_aedat31_polarity",
    "read_atis_bin",
    "read_cifar_records",
    "read_events_npz",
    "read_tonic_gesture_npy",
    "register_frame_dataset",
    "register_image_dataset",
    "shift2d",
    "spatial_pool",
    "to_frames",
]
