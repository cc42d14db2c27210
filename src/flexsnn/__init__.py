"""flexsnn: spiking neural networks that work at any number of time steps.

Mixed Time-step Training (MTT) with Temporal Transformation Modules (TTM) between network
stages, the baselines it is compared with, evaluation across time steps, and event-driven
deployment. The subpackages hold the API (``flexsnn.neurons``, ``flexsnn.staged``,
``flexsnn.models``, ``flexsnn.data``, ``flexsnn.train``, ``flexsnn.evaluate``, ``flexsnn.deploy``);
the names below are the ones most scripts start from.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from flexsnn.staged import StagedNet, TimeConfig, staged_from_layers
from flexsnn.temporal import TTM, ttm

try:
    __version__ = version("flexsnn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["StagedNet", "TTM", "TimeConfig", "__version__", "staged_from_layers", "ttm"]
