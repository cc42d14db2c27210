"""The functional API: ``lif_multistep(x, params, backend)`` picks one of three backends.

Every backend gives the same spikes and gradients allclose to the reference:

- ``"reference"``: :mod:`flexsnn.neurons.reference`, one autograd node per step (simple,
  slow, the ground truth for tests);
- ``"fused"``: :mod:`flexsnn.neurons.fused`, one node for all T steps with a hand-written
  BPTT (numba kernels on float32 CPU tensors, else eager torch ops); ``"auto"`` (the default
  here and in the LIF / IF layers) is this one;
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


def check_input(x, params: NeuronParams | None = None, backend: str | None = None) -> torch.Tensor:
    """Check the neuron input: a floating-point tensor ``[T, B, ...]`` with T >= 1, finite.

    Finiteness is checked on CPU only: on an accelerator reading the answer back would stall
    the device once per neuron layer. There a StagedNet still checks its own input once per
    forward (:meth:`flexsnn.staged.StagedNet.forward`), and a NaN born inside the network
    shows in the loss.

    With the ``params`` and ``backend`` of a neuron without a lower membrane clip, run by the
    fused or reference loops, the finiteness check is left to :func:`check_last_membrane`
    after the run (one step's values instead of all T).
    """
    x = check_time_first(x, "x", min_dim=2)
    if not x.is_floating_point():
        raise InputError(f"x must be a floating-point tensor [T, B, ...], got dtype {x.dtype}")
    if x.device.type != "cpu" or _finite_from_last_membrane(params, backend):
        return x
    return check_finite(x, "x")


# Backends whose loops carry every NaN or infinity of x to the last membrane: h = decay * u + x
# keeps it, their resets keep it (m - m * g and m * (1 - g) give inf - inf or inf * 0, NaN) and
# so does the next step's h. The compiled kernels reset with where(), which zeroes +inf; a lower
# clip (v_min) turns -inf into a finite value: there x itself is checked.
_CARRY_NONFINITE = ("auto", "fused", "reference")


def _finite_from_last_membrane(params: NeuronParams | None, backend: str | None) -> bool:
    return params is not None and params.v_min is None and backend in _CARRY_NONFINITE


def check_last_membrane(x: torch.Tensor, v_last: torch.Tensor, params: NeuronParams, backend: str) -> None:
    """The finiteness check :func:`check_input` left to after the run: ``x`` is checked
    element by element only when the last membrane ``v_last`` is not finite."""
    if x.device.type != "cpu" or not _finite_from_last_membrane(params, backend) or torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(v_last.sum())):
        check_finite(x, "x")  # NaN / inf in x, or finite values whose sum overflowed


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
    spikes, v_last = run(check_input(x, params, backend), params)
    check_last_membrane(x, v_last, params, backend)
    return spikes, v_last
