"""The functional API: ``lif_multistep(x, params, backend)`` picks one of three backends.

Every backend gives the same spikes and gradients allclose to the reference:

- ``"reference"``: :mod:`flexsnn.neurons.reference`, one autograd node per step (simple,
  slow, the ground truth for tests);
- ``"fused"``: :mod:`flexsnn.neurons.fused`, one node for all T steps with a hand-written
  BPTT, eager; ``"auto"`` (the default here and in the LIF / IF layers) is this one;
- ``"compiled"``: :mod:`flexsnn.neurons.compiled`, the same BPTT as torch.compile'd kernels.
  Opt-in: the first call per (T, parameters, dtype, device) compiles for seconds and needs a
  C++ compiler (without one it warns and runs the fused path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flexsnn.errors import InputError, check_choice, check_finite, check_time_first
from flexsnn.neurons.compiled import compiled_multistep
from flexsnn.neurons.fused import fused_multistep
from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.reference import reference_multistep

Runner = Callable[[torch.Tensor, NeuronParams], tuple[torch.Tensor, torch.Tensor]]

BACKENDS = ("auto", "fused", "reference", "compiled")
_RUNNERS: dict[str, Runner] = {
    "auto": fused_multistep,
    "fused": fused_multistep,
    "reference": reference_multistep,
    "compiled": compiled_multistep,
}


def multistep_runner(backend: str) -> Runner:
    """``run(x, params) -> (spikes, v_last)`` of a backend in :data:`BACKENDS` (no input checks)."""
    return _RUNNERS[check_choice(backend, "backend", BACKENDS)]


def check_input(x) -> torch.Tensor:
    """Check the neuron input: a floating-point tensor ``[T, B, ...]`` with T >= 1, finite.

    Finiteness is checked on CPU only: on an accelerator reading the answer back would stall
    the device once per neuron layer. There a StagedNet still checks its own input once per
    forward (:meth:`flexsnn.staged.StagedNet.forward`), and a NaN born inside the network
    shows in the loss.
    """
    x = check_time_first(x, "x", min_dim=2)
    if not x.is_floating_point():
        raise InputError(f"x must be a floating-point tensor [T, B, ...], got dtype {x.dtype}")
    return check_finite(x, "x") if x.device.type == "cpu" else x


def lif_multistep(
    x: torch.Tensor, params: NeuronParams | None = None, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run LIF (IF when ``params.decay == 1``) over ``x`` ``[T, B, ...]``.

    ``params``: a :class:`~flexsnn.neurons.params.NeuronParams` (None: its defaults, a LIF
    with ``v_th=1, decay=0.5``, hard reset, triangle surrogate). Returns ``(spikes,
    v_last)``: spikes ``[T, B, ...]`` (0/1, or counts when ``multi_spike``) in ``x``'s dtype
    and device, and the membrane after the last step's reset, ``[B, ...]``. Both are
    differentiable w.r.t. ``x`` through the surrogate. ``backend``: ``"auto"`` (= fused) |
    ``"fused"`` | ``"reference"`` | ``"compiled"`` (module docstring).
    """
    run = multistep_runner(backend)
    if params is None:
        params = NeuronParams()
    elif not isinstance(params, NeuronParams):
        raise InputError(
            f"params must be a NeuronParams, e.g. NeuronParams(v_th=1.0, decay=0.5), got {type(params).__name__}"
        )
    return run(check_input(x), params)
