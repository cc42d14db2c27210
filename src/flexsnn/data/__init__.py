"""Datasets and input encodings.

- :class:`DigitsDVS`: the embedded default dataset (sklearn digits seen by a simulated DVS).
- :func:`to_frames` / :class:`ToFrame`: event -> ``[T, P, H, W]`` count frames.
- :func:`direct_encode`: static ``[B, ...]`` -> time-first ``[T, B, ...]``.
- :func:`load_frames` / :func:`make_loaders`: cached binned datasets and their DataLoaders.
"""
from flexsnn.data.digits_dvs import DigitsDVS
from flexsnn.data.encoding import direct_encode, frames_to_time_first
from flexsnn.data.frames import SpatialPool, ToFrame, spatial_pool, to_frames
from flexsnn.data.loaders import FRAME_DATASETS, load_frames, make_loaders, register_frame_dataset

__all__ = [
    "DigitsDVS",
    "FRAME_DATASETS",
    "SpatialPool",
    "ToFrame",
    "direct_encode",
    "frames_to_time_first",
    "load_frames",
    "make_loaders",
    "register_frame_dataset",
    "spatial_pool",
    "to_frames",
]
