"""Event-driven (clock-free) simulator of a deployable spiking network, compiled with numba.

Rules: ``docs/event_driven.md``. Four modules, one job each:

- :mod:`~flexsnn.deploy.simulator.kernels`: the numba kernels, flat on purpose (one kernel
  runs any stack encoded as flat arrays, compiled once per process and cached on disk);
- :mod:`~flexsnn.deploy.simulator.compile`: an :class:`~flexsnn.deploy.eventnet.EventNet`
  encoded as those arrays (:class:`CompiledNet`);
- :mod:`~flexsnn.deploy.simulator.threads`: the work spread over threads, by samples or by
  the channels of one sample's layers;
- :mod:`~flexsnn.deploy.simulator.simulate`: the public :func:`simulate` and
  :class:`SimulationResult`.
"""

from flexsnn.data.events import check_events, check_sensor_size
from flexsnn.deploy.simulator.compile import CompiledNet, compile_net, compiled_for
from flexsnn.deploy.simulator.simulate import (
    READOUTS,
    SimulationError,
    SimulationResult,
    predictions,
    simulate,
    spike_count_readout,
)

__all__ = [
    "simulate",
    "SimulationResult",
    "SimulationError",
    "predictions",
    "spike_count_readout",
    "READOUTS",
    "compile_net",
    "compiled_for",
    "CompiledNet",
    "check_events",
    "check_sensor_size",
]
