"""Run folders and checkpoints: safetensors + JSON, written atomically, verified when loaded.

A run folder holds
  config.json            everything needed to rebuild the model (model spec, sampler, training
                         options, the TimeConfig the BN stats were calibrated for) and the
                         SHA-256 of every tensor of model.safetensors (``weights_sha256``)
  model.safetensors      the final weights and BN buffers
  checkpoint.safetensors the last training state (model, optimizer, RNG states) with the
                         non-tensor state (epoch, step, scheduler, history) as JSON metadata
Checkpoints are single files replaced atomically (temp file, fsync, rename), so a killed run
resumes from the last complete one; a corrupt or truncated file raises CheckpointError, it
is never treated as "no checkpoint".

Verification: every safetensors file flexsnn writes carries the SHA-256 of each tensor
(over its dtype, shape and bytes) in its header, and ``config.json`` repeats those of
``model.safetensors``. Loading checks every tensor against the model it goes into (same
names, same dtype: nothing is cast, same shape), that floating-point tensors are finite, and
the hashes: a flipped bit, a NaN, an int tensor where floats were saved, or optimizer state
shaped unlike its parameter raise CheckpointError naming the file and the tensor. Files of
older flexsnn versions carry no hashes: they load after the other checks with an
:class:`~flexsnn.errors.UnverifiedWeightsWarning`; :func:`add_content_hashes` re-saves a run
folder with hashes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from flexsnn.errors import CheckpointError, FlexSNNError, StorageError, UnverifiedWeightsWarning
from flexsnn.io import (
    Dict,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Str,
    atomic_write,
    check_schema,
    parse_json,
    read_json,
    write_json,
)
from flexsnn.models import build_model

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
WEIGHTS_HASH_KEY = "weights_sha256"  # config.json: {tensor name: SHA-256} of model.safetensors
_STATE_KEY = "flexsnn_state"
_HASH_KEY = "flexsnn_sha256"  # safetensors header: {tensor name: SHA-256}
# Metadata every training checkpoint must carry (written by flexsnn.train.loop.fit).
REQUIRED_STATE_KEYS = ("train_state", "scheduler", "optimizer", "rng", "options", "sampler")

_SHA256 = Str()
RUN_CONFIG_SCHEMA = Dict(
    {
        "model": Dict({"name": Str(), "kwargs?": MapOf()}),
        "bn_calibrated_for?": Nullable(ListOf(Int(min=1), min_len=1)),
        WEIGHTS_HASH_KEY + "?": MapOf(_SHA256),
        "run?": MapOf(),
        "sampler?": MapOf(),
        "history?": ListOf(MapOf()),
        "deploy?": MapOf(),
    },
    extra=True,
)

OPTIMIZER_SCHEMA = Dict(
    {
        "state": MapOf(MapOf()),
        "param_groups": ListOf(Dict({"params": ListOf(Int(min=0))}, extra=True), min_len=1),
    }
)

CHECKPOINT_SCHEMA = Dict(
    {
        "train_state": MapOf(),
        "scheduler": MapOf(),
        "optimizer": OPTIMIZER_SCHEMA,
        "rng": MapOf(),
        "options": MapOf(),
        "sampler": MapOf(),
    },
    extra=True,
)


# --- content hashes ------------------------------------------------------------------------


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 over a tensor's dtype, shape and bytes (so a re-typed or re-shaped tensor with
    the same bytes does not match either)."""
    t = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}".encode())
    if t.numel():
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def tensor_digests(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {name: tensor_sha256(t) for name, t in tensors.items()}


# --- safetensors files ---------------------------------------------------------------------


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; checkpoints are small enough to copy.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict | None = None
) -> dict[str, str]:
    """Write ``tensors`` (+ JSON ``metadata``) to ``path`` atomically and durably; return the
    tensors' SHA-256 digests (also stored in the file's header).

    The bytes are flushed to disk (fsync) before the temporary file replaces ``path``, so
    neither a killed process nor a power cut can leave a half-written checkpoint in place.
    A write the OS refuses (disk full, read-only) raises StorageError; ``path`` is untouched.
    """
    tensors = _contiguous(tensors)
    digests = tensor_digests(tensors)
    meta = {_HASH_KEY: json.dumps(digests)}
    if metadata is not None:
        meta[_STATE_KEY] = json.dumps(metadata)
    with atomic_write(path) as tmp:
        mode = tmp.stat().st_mode  # the umask's, which safetensors' writer does not keep
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as exc:
            raise StorageError(f"cannot write {path}: {safetensors_reason(exc)}") from None
        os.chmod(tmp, stat.S_IMODE(mode))
        _fsync(tmp)
    _fsync_dir(Path(path).parent)
    return digests


def safetensors_reason(exc: Exception) -> str:
    """The OS reason inside a safetensors I/O error (``... message: "No space left on device"``
    or ``I/O error: File too large (os error 27)``)."""
    text = " ".join(str(exc).split())
    match = re.search(r'message: "([^"]+)"', text) or re.search(r"I/O error: (.+?) \(os error \d+\)", text)
    return match.group(1) if match else text


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_safetensors(
    path: str | os.PathLike, what: str
) -> tuple[dict[str, torch.Tensor], dict | None, dict[str, str] | None]:
    """``(tensors, flexsnn metadata or None, stored digests or None)`` of a safetensors file,
    without any check of the tensors (see :func:`verify_tensors`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({safetensors_reason(exc)})") from None
    source = f"the metadata of {what} {path}"
    state = parse_json(meta[_STATE_KEY], source) if _STATE_KEY in meta else None
    digests = (
        parse_json(meta[_HASH_KEY], source, schema=MapOf(_SHA256), error=CheckpointError) if _HASH_KEY in meta else None
    )
    return tensors, state, digests


def read_metadata(path: str | os.PathLike, what: str) -> dict | None:
    """The flexsnn metadata of a safetensors file, reading only its header (no tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({safetensors_reason(exc)})") from None
    return parse_json(meta[_STATE_KEY], f"the metadata of {what} {path}") if _STATE_KEY in meta else None


def read_training_metadata(run_dir: str | os.PathLike, meta_schema: Any = None) -> dict:
    """The schema-checked metadata of a run's training checkpoint (header only)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    return _checked_training_meta(read_metadata(path, "training checkpoint"), path, meta_schema)


def _checked_training_meta(meta: Any, path: Path, meta_schema: Any) -> dict:
    if meta is None:
        raise CheckpointError(f"training checkpoint {path} has no flexsnn state metadata")
    if not isinstance(meta, dict) or any(k not in meta for k in REQUIRED_STATE_KEYS):
        missing = [k for k in REQUIRED_STATE_KEYS if not isinstance(meta, dict) or k not in meta]
        raise CheckpointError(
            f"training checkpoint {path} is incomplete (metadata lacks {missing}); "
            "it was not written by this version of flexsnn's training loop"
        )
    for schema in (CHECKPOINT_SCHEMA, meta_schema):
        if schema is not None:
            check_schema(meta, schema, f"the metadata of training checkpoint {path}", error=CheckpointError)
    return meta


def load_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors and flexsnn metadata of a safetensors file; the tensors are checked against
    the digests in the file's header (when it has them) and for finiteness."""
    tensors, state, digests = read_safetensors(path, what)
    verify_tensors(tensors, Path(path), digests=digests)
    return tensors, state


def verify_tensors(
    tensors: Mapping[str, torch.Tensor],
    source: Path | str,
    digests: Mapping[str, str] | None = None,
    expected: Mapping[str, torch.Tensor] | None = None,
    warn_unverified: bool = False,
) -> None:
    """Check loaded ``tensors`` (from file ``source``); raise CheckpointError at the first
    problem, naming the file and the tensor.

    ``expected``: the state the tensors go into (a model's ``state_dict()``): the names must
    be the same, each dtype and shape equal. Floating-point tensors must be finite.
    ``digests``: SHA-256 per name recorded at save time; every tensor must match. Without
    digests and with ``warn_unverified``, an UnverifiedWeightsWarning says so.
    """
    if expected is not None:
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {_names(missing)}")
            if unexpected:
                parts.append(f"unexpected {_names(unexpected)}")
            raise CheckpointError(f"weights in {source} do not match the model in its config ({'; '.join(parts)})")
        for name, want in expected.items():
            got = tensors[name]
            if got.dtype != want.dtype or tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(
                    f"weights in {source} do not match the model: tensor {name!r} is {_describe(got)}, "
                    f"the model expects {_describe(want)}"
                )
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {name!r} holds NaN or infinite values; refusing to load it")
    if digests is None:
        if warn_unverified:
            warnings.warn(
                UnverifiedWeightsWarning(
                    f"{source} carries no content hashes (written by an older flexsnn): its tensors were checked "
                    "for names, dtypes, shapes and finite values only; re-save the run with "
                    "flexsnn.train.checkpoint.add_content_hashes(RUN) to verify it from now on"
                ),
                stacklevel=3,
            )
        return
    if set(digests) != set(tensors):
        missing = sorted(set(digests) - set(tensors))
        extra = sorted(set(tensors) - set(digests))
        raise CheckpointError(
            f"{source} does not hold the tensors recorded when it was saved"
            + (f" (missing {_names(missing)})" if missing else "")
            + (f" (unrecorded {_names(extra)})" if extra else "")
        )
    for name, t in tensors.items():
        if tensor_sha256(t) != digests[name]:
            raise CheckpointError(
                f"{source}: tensor {name!r} does not match the SHA-256 recorded when it was saved "
                "(the file was modified or corrupted); restore it or re-run"
            )


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"


# --- run folders ---------------------------------------------------------------------------


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a run folder, schema-checked (errors name the file and the key)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir} (expected a folder written by `flexsnn train`)")
    return read_json(run_dir / CONFIG_FILE, what="run config", schema=RUN_CONFIG_SCHEMA, error=CheckpointError)


def save_model(run_dir: str | os.PathLike, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (config must be JSON-able).

    The config records the model spec, the TimeConfig its BN statistics are calibrated for
    and the SHA-256 of every tensor. The weights are written first, so a run folder whose
    config exists always has its weights.
    """
    run_dir = Path(run_dir)
    config = dict(config)
    config["model"] = getattr(model, "model_spec", config.get("model"))
    config["bn_calibrated_for"] = _listify(getattr(model, "bn_calibrated_for", None))
    state = model.state_dict()
    for name, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"cannot save the model to {run_dir / MODEL_FILE}: tensor {name!r} holds NaN or infinite values "
                "(training diverged: lower the learning rate)"
            )
    config[WEIGHTS_HASH_KEY] = save_safetensors(run_dir / MODEL_FILE, state)
    write_json(run_dir / CONFIG_FILE, config)


def _check_model_size(spec: Any, config_path: Path, weights: Path) -> None:
    """Refuse a config whose model has far more parameters than the weights file holds (a
    tampered layer size, channel count or input size) before that model is built for real:
    the sizes are read on the meta device, nothing is allocated."""
    if not weights.is_file() or not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return  # the load below names what is missing or malformed
    try:
        with torch.device("meta"):
            net = build_model(spec["name"], **spec.get("kwargs", {}))
    except Exception:  # noqa: BLE001 - the real build below reports the model's own error
        return
    count = sum(t.numel() for t in (*net.parameters(), *net.buffers()))
    needed, held = count * 4, weights.stat().st_size  # float32
    if needed > 2 * held + 2**20:  # 2x: half-precision files; 1 MiB: the header
        raise CheckpointError(
            f"{config_path}: key 'model' describes a model of {count:,} parameters (about {needed / 1e6:,.0f} MB), "
            f"but {weights} holds {held / 1e6:,.1f} MB; the config's layer sizes do not match the weights "
            "(tampered or from another run)"
        )


def load_model(
    run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    prepare: Callable[[nn.Module], Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder from ``config.json`` and load its verified weights.

    ``prepare(model)`` runs on the freshly built model before its weights load: a deployed
    run (BN folded away) strips its BN layers there (:func:`flexsnn.runs.load_deployed`).
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    config_path = run_dir / CONFIG_FILE
    if "deploy" in config and prepare is None:
        raise CheckpointError(
            f"{run_dir} is a deployed run (BN folded away, biases frozen); "
            "load it with flexsnn.runs.load_run or flexsnn.runs.load_deployed"
        )
    spec = config["model"]
    _check_model_size(spec, config_path, run_dir / MODEL_FILE)
    try:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
    except (FlexSNNError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{config_path}: key 'model' does not describe a model flexsnn can build ({first})"
        ) from None
    if prepare is not None:
        prepare(model)
    weights = run_dir / MODEL_FILE
    tensors, _, file_digests = read_safetensors(weights, what="model weights")
    digests = config.get(WEIGHTS_HASH_KEY)
    if digests is not None and file_digests is not None and dict(digests) != dict(file_digests):
        raise CheckpointError(f"{weights} is not the file {config_path} was saved with (its SHA-256 digests differ)")
    verify_tensors(
        tensors,
        weights,
        digests if digests is not None else file_digests,
        expected=model.state_dict(),
        warn_unverified=True,
    )
    load_state(model, tensors, weights)
    model.to(device)
    calibrated = config.get("bn_calibrated_for")
    if calibrated is not None and hasattr(model, "mark_calibrated"):
        try:
            model.mark_calibrated(tuple(calibrated))
        except FlexSNNError as exc:
            raise CheckpointError(f"{config_path}: key 'bn_calibrated_for' does not fit the model ({exc})") from None
    return model, config


def add_content_hashes(run_dir: str | os.PathLike) -> None:
    """Give a run folder written by an older flexsnn its SHA-256 hashes: ``model.safetensors``
    is rewritten with the same tensors (checked for finite values) and ``config.json`` records
    their digests. Only for a folder whose files you trust: what is there now becomes the
    reference."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    weights = run_dir / MODEL_FILE
    tensors, _, _ = read_safetensors(weights, what="model weights")
    verify_tensors(tensors, weights)
    config[WEIGHTS_HASH_KEY] = save_safetensors(weights, tensors)
    write_json(run_dir / CONFIG_FILE, config)


def load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"weights in {source} do not match the model in its config ({first})") from None


def _listify(value):
    return list(value) if isinstance(value, tuple) else value


# --- training state ---------------------------------------------------------------------


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON."""
    sd = optimizer.state_dict()
    tensors, state_json = {}, {}
    for idx, per_param in sd["state"].items():
        entry = {}
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
                entry[name] = {"tensor": f"optim.{idx}.{name}"}
            else:
                entry[name] = value
        state_json[str(idx)] = entry
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


_NONNEGATIVE_GROUP_KEYS = ("lr", "momentum", "weight_decay", "dampening", "eps")


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: dict, source: Path | str = "checkpoint"
) -> None:
    """Inverse of :func:`optimizer_to_flat`, refusing state that does not fit ``optimizer``:
    per-parameter tensors shaped or typed unlike their parameter, non-finite or negative
    hyperparameters, parameter ids that do not exist."""
    groups_now = optimizer.param_groups
    groups_saved = meta["param_groups"]
    if len(groups_saved) != len(groups_now) or any(
        len(g["params"]) != len(h["params"]) for g, h in zip(groups_saved, groups_now)
    ):
        raise CheckpointError(
            f"optimizer state in {source} does not match: it has {[len(g['params']) for g in groups_saved]} "
            f"parameters per group, the model's optimizer {[len(g['params']) for g in groups_now]}"
        )
    params = {pid: p for g, h in zip(groups_saved, groups_now) for pid, p in zip(g["params"], h["params"])}
    for k, group in enumerate(groups_saved):
        for key in _NONNEGATIVE_GROUP_KEYS:
            if key in group and not _nonnegative_number(group[key]):
                raise CheckpointError(
                    f"optimizer state in {source}: param_groups[{k}].{key} must be a finite "
                    f"number >= 0, got {group[key]!r}"
                )
    state = {}
    for idx, entry in meta["state"].items():
        if not idx.isdigit() or int(idx) not in params:
            raise CheckpointError(f"optimizer state in {source} names parameter {idx!r}, which its param_groups lack")
        param = params[int(idx)]
        restored = {}
        for name, value in entry.items():
            if isinstance(value, dict):
                ref = value.get("tensor")
                if not isinstance(ref, str) or ref not in tensors:
                    raise CheckpointError(f"optimizer state in {source} refers to tensor {ref!r}, which the file lacks")
                value = tensors[ref]
                _check_state_tensor(value, param, ref, source)
            restored[name] = value
        state[int(idx)] = restored
    # JSON turned tuples (AdamW's betas, Rprop's etas) into lists; give them back as tuples.
    groups = [
        {k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in g.items()} for g in groups_saved
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state in {source} does not match ({exc})") from None


def _nonnegative_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_state_tensor(value: torch.Tensor, param: torch.Tensor, name: str, source) -> None:
    if value.dim() == 0:  # a step count
        return
    if tuple(value.shape) != tuple(param.shape) or not value.is_floating_point():
        raise CheckpointError(
            f"optimizer state in {source}: tensor {name!r} is {_describe(value)}, its parameter is "
            f"{_describe(param)}; refusing to resume with it"
        )


def save_training_state(
    run_dir: str | os.PathLike, model: nn.Module, optimizer, extra_tensors: dict, meta: dict
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors.update(extra_tensors)
    save_safetensors(Path(run_dir) / CHECKPOINT_FILE, tensors, {**meta, "optimizer": opt_meta})


def load_training_state(
    run_dir: str | os.PathLike, model: nn.Module, optimizer, meta_schema: Any = None
) -> tuple[dict, dict]:
    """Restore model + optimizer from the run's checkpoint; return (meta, remaining tensors).

    Every tensor is verified (hashes, finite values; the model's and the optimizer's against
    what they go into) and the metadata is schema-checked (also against ``meta_schema``),
    before anything is loaded.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    tensors, meta, digests = read_safetensors(path, what="training checkpoint")
    meta = _checked_training_meta(meta, path, meta_schema)
    verify_tensors(tensors, path, digests, warn_unverified=True)
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    verify_tensors(model_state, path, expected=model.state_dict())
    load_state(model, model_state, path)
    optimizer_from_flat(optimizer, tensors, meta["optimizer"], path)
    rest = {k: v for k, v in tensors.items() if not k.startswith(("model.", "optim."))}
    return meta, rest
