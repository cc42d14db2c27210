"""Inference without autograd, compiled where it pays, for a StagedNet at any TimeConfig.

``InferenceRunner(model, time_config)`` runs ``model`` in eval mode under
``torch.inference_mode`` semantics (no autograd graph, no saved tensors). With compilation
on, each distinct *(TimeConfig, input shape, dtype, device)* is compiled exactly once, the
first time it is seen, and reused for every later batch: switching between configs that
were already seen costs nothing, and a config never seen before costs one compile (counted
in :attr:`InferenceRunner.compile_count`). Each key gets its own compiled function (its own
code object), so dynamo's per-function recompile limit can never silently push configs
back to eager after a few distinct ones.

Layouts: ``x`` is what the model takes (static ``[B, ...]`` or frames ``[T_in, B, ...]``);
``runner(x)`` returns the model's output ``[T_last, B, classes]`` and
``runner.predict(x)`` its readout ``[B, classes]``.

Micro-batches (CPU): a compiled graph allocates its ``[T*B, ...]`` intermediates itself, and
with glibc's default malloc every one above 32 MiB is a fresh ``mmap`` faulted in on every
call. By default the runner splits a StagedNet's batch into chunks whose largest intermediate
stays under :data:`MICRO_BATCH_BYTES` (measured once per key on a one-sample eager forward)
and concatenates the outputs; eval-mode layers treat samples independently, so the result
equals the whole-batch forward up to float rounding of the matrix products.

Compilation pays for repeated batches of one shape (evaluation sweeps, serving); it does
not pay for a handful of calls (a compile costs seconds). ``compile="auto"`` compiles when
``torch.compile`` works on this platform, and otherwise runs eager without autograd.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import nn

from flexsnn.errors import InputError, check_finite
from flexsnn.runtime import use_channels_last

TimeConfigLike = Union[int, Sequence[int]]  # noqa: UP007 (a runtime alias, valid on Python 3.10)
COMPILE_CHOICES = ("auto", True, False)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``micro_batch="auto"`` keeps each chunk's largest intermediate under this many bytes.
MICRO_BATCH_BYTES = 16 << 20


def _model_call(model: nn.Module, x: torch.Tensor, time_config) -> torch.Tensor:
    return model(x, time_config=time_config)


def _fresh_copy(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object: dynamo caches per code object."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def compile_available() -> bool:
    """Whether ``torch.compile`` can be used here (dynamo supports this Python/platform)."""
    try:
        import torch._dynamo  # noqa: F401

        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:
        return False


class InferenceRunner:
    """No-autograd, compiled-where-it-pays forward of a StagedNet (or any model taking
    ``forward(x, time_config=...)``).

    Args:
        model: the network; put in eval mode by the runner (its train/eval flag is restored
            by :meth:`close`).
        time_config: default TimeConfig (int or one int per stage); ``None`` uses the
            model's own (``model.time_config``) or, for frames models, the input's T.
        compile: ``"auto"`` (compile when available), ``True`` (always; errors surface),
            ``False`` (eager, no autograd).
        backend: torch.compile backend name (default ``"inductor"``).
        channels_last: re-lay out the model's conv weights as channels_last (in place, values
            unchanged; :func:`flexsnn.runtime.use_channels_last`): faster convolutions.
        amp: ``"none"`` (float32), ``"bf16"`` or ``"fp16"``: convolutions and linear layers
            under ``torch.autocast`` (about 2x faster convolutions on CPUs with AVX512-BF16,
            tensor cores on CUDA); neurons integrate in float32 and the output is float32.
            Not bit-identical to float32: currents are rounded to 8 (bf16) or 11 (fp16)
            mantissa bits, which can move a spike that sits at the threshold.
        micro_batch: how compiled runs split a StagedNet's batch: ``"auto"`` (on CPU, chunks
            whose largest intermediate is at most :data:`MICRO_BATCH_BYTES`; whole batches on
            other devices), a positive int (samples per chunk) or ``None`` (whole batches).
            Each chunk shape is a compile key. Eager runs (conv and neuron buffers pooled),
            models other than a StagedNet and stateful (streaming) models run whole batches.
    """

    def __init__(
        self,
        model: nn.Module,
        time_config: TimeConfigLike | None = None,
        compile: str | bool = "auto",
        backend: str = "inductor",
        channels_last: bool = True,
        amp: str = "none",
        micro_batch: int | str | None = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be an nn.Module (a StagedNet), got {type(model).__name__}")
        if compile not in COMPILE_CHOICES or isinstance(compile, int) and not isinstance(compile, bool):
            raise InputError(f"compile must be 'auto', True or False, got {compile!r}")
        if not isinstance(channels_last, bool):
            raise InputError(f"channels_last must be True or False, got {channels_last!r}")
        if amp not in AMP_DTYPES:
            raise InputError(f"amp must be one of {', '.join(map(repr, AMP_DTYPES))}, got {amp!r}")
        if not (
            micro_batch is None
            or micro_batch == "auto"
            or (isinstance(micro_batch, int) and not isinstance(micro_batch, bool) and micro_batch >= 1)
        ):
            raise InputError(f"micro_batch must be 'auto', a positive int or None, got {micro_batch!r}")
        self.amp = amp
        self.micro_batch = micro_batch
        self._rows: dict[tuple, int | None] = {}  # chunk rows per (config, sample shape) under "auto"
        self.model = use_channels_last(model) if channels_last else model
        self._was_training = model.training
        model.eval()
        self.compile = compile_available() if compile == "auto" else bool(compile)
        self.backend = backend
        self._time_config = self._normalize(time_config) if time_config is not None else None
        self._compiled: dict[tuple, Callable] = {}
        self._lock = threading.Lock()
        self.compile_count = 0  # graphs compiled by this runner (one per key without graph breaks)
        self.calls = 0

    # ---- configuration --------------------------------------------------------------------
    def _normalize(self, cfg: TimeConfigLike) -> tuple[int, ...]:
        if hasattr(self.model, "normalize_time_config"):
            return tuple(self.model.normalize_time_config(cfg))
        if isinstance(cfg, int) and not isinstance(cfg, bool) and cfg >= 1:
            return (cfg,)
        if isinstance(cfg, (tuple, list)) and cfg and all(isinstance(v, int) and v >= 1 for v in cfg):
            return tuple(int(v) for v in cfg)
        raise InputError(f"time_config must be a positive int or a sequence of positive ints, got {cfg!r}")

    @property
    def time_config(self) -> tuple[int, ...] | None:
        return self._time_config

    def set_time_config(self, cfg: TimeConfigLike) -> None:
        """Change the default TimeConfig (no compile happens until a batch needs it)."""
        self._time_config = self._normalize(cfg)

    def _resolve(self, x: torch.Tensor, cfg: TimeConfigLike | None) -> tuple[int, ...]:
        if cfg is not None:
            return self._normalize(cfg)
        if self._time_config is not None:
            return self._time_config
        if hasattr(self.model, "resolve_time_config"):
            return tuple(self.model.resolve_time_config(x))
        raise InputError("no time_config: pass InferenceRunner(model, time_config=...) or runner(x, time_config=...)")

    @property
    def compiled_keys(self) -> list[tuple]:
        """``(time_config, shape, dtype, device)`` of every compiled entry, in order."""
        return list(self._compiled)

    # ---- running --------------------------------------------------------------------------
    def _counting_backend(self, gm, example_inputs):
        self.compile_count += 1
        if self.backend == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs)
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(self.backend)(gm, example_inputs)

    def _compiled_for(self, key: tuple) -> Callable:
        with self._lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = torch.compile(
                    _fresh_copy(_model_call, str(len(self._compiled))), backend=self._counting_backend, dynamic=False
                )
                self._compiled[key] = fn
        return fn

    def __call__(self, x: torch.Tensor, time_config: TimeConfigLike | None = None) -> torch.Tensor:
        """``x`` in the model's layout -> output ``[T_last, B, classes]`` (no autograd)."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"x must be a torch.Tensor in the model's input layout, got {type(x).__name__}")
        cfg = self._resolve(x, time_config)
        if self.model.training:  # someone trained in between: BN must use running stats again
            self.model.eval()
        self.calls += 1
        with torch.no_grad(), self._autocast(x):
            if not self.compile:
                return self._output(_model_call(self.model, x, cfg))
            check_finite(x, "x")  # once, eagerly, so a bad batch raises InputError as in eager mode
            dim = self._batch_dim(x)
            rows = self._chunk_rows(x, cfg, dim)
            if rows is None or rows >= x.shape[dim]:
                return self._output(self._run_compiled(x, cfg))
            chunks = -(-x.shape[dim] // rows)  # as equal as possible (sizes differ by one at most)
            outs = [self._run_compiled(part, cfg) for part in torch.tensor_split(x, chunks, dim=dim)]
            return self._output(torch.cat(outs, dim=1))  # outputs are [T_last, B, classes]

    def _run_compiled(self, x: torch.Tensor, cfg: tuple[int, ...]) -> torch.Tensor:
        key = (cfg, tuple(x.shape), x.dtype, str(x.device), self.amp)
        return self._compiled_for(key)(self.model, x, cfg)

    def _batch_dim(self, x: torch.Tensor) -> int | None:
        """Where the batch is in ``x`` (a StagedNet's input kind says), None for other models."""
        kind = getattr(self.model, "input_kind", None)
        dim = {"static": 0, "frames": 1}.get(kind) if isinstance(kind, str) else None
        return dim if dim is not None and x.dim() > dim else None

    def _chunk_rows(self, x: torch.Tensor, cfg: tuple[int, ...], dim: int | None) -> int | None:
        """Samples per chunk: the user's number, or under "auto" what keeps the largest
        intermediate of a chunk under MICRO_BATCH_BYTES (None: the whole batch)."""
        if dim is None or self.micro_batch is None or getattr(self.model, "stateful", False) is True:
            return None  # a streaming (stateful) model keeps one state per batch row: never split
        if isinstance(self.micro_batch, int):
            return self.micro_batch
        if x.device.type != "cpu":
            return None
        key = (cfg, tuple(x.shape[:dim]) + tuple(x.shape[dim + 1 :]), x.dtype, self.amp)
        if key not in self._rows:
            per_sample = self._largest_intermediate_bytes(x.narrow(dim, 0, 1), cfg)
            self._rows[key] = max(1, MICRO_BATCH_BYTES // per_sample) if per_sample else None
        return self._rows[key]

    def _largest_intermediate_bytes(self, one: torch.Tensor, cfg: tuple[int, ...]) -> int:
        """The largest module output of an eager forward of one sample, in bytes."""
        largest = [0]

        def record(module, args, out):
            if isinstance(out, torch.Tensor):
                largest[0] = max(largest[0], out.numel() * out.element_size())

        handles = [m.register_forward_hook(record) for m in self.model.modules()]
        try:
            _model_call(self.model, one, cfg)
        finally:
            for h in handles:
                h.remove()
        return largest[0]

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.amp == "none" else out.float()  # the head ran in low precision

    def _autocast(self, x: torch.Tensor):
        dtype = AMP_DTYPES[self.amp]
        return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def predict(self, x: torch.Tensor, time_config: TimeConfigLike | None = None) -> torch.Tensor:
        """Readout ``[B, classes]``: the output averaged over time."""
        out = self(x, time_config)
        readout = getattr(self.model, "readout", None)
        return readout(out) if callable(readout) else out.mean(0)

    def close(self) -> None:
        """Drop compiled entries and restore the model's train/eval flag."""
        self._compiled.clear()
        self.model.train(self._was_training)

    def stats(self) -> dict[str, Any]:
        return {
            "compile": self.compile,
            "compile_count": self.compile_count,
            "keys": len(self._compiled),
            "calls": self.calls,
            "amp": self.amp,
        }
