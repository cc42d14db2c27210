"""Run folders: one writer at a time, nothing written over by accident, load a trained or deployed run.

A trained run (``flexsnn train``) and a deployed one (``flexsnn deploy prepare``) hold the
same files (:mod:`flexsnn.train.checkpoint`); a deployed run's ``config.json`` also has a
``deploy`` section, and its weights are those of the model with BN folded away and biases
frozen at zero, so its architecture is adapted before the weights load.

One writer per folder: :func:`run_folder_lock` takes an exclusive ``fcntl.flock`` on
``.flexsnn.lock`` in the folder and records the holder's PID there; a second process gets a
:class:`~flexsnn.errors.RunFolderBusyError` naming that PID. The kernel releases the lock
when its holder exits, however it exits, so a lock file left by a killed process is stale by
construction and is taken over (where the file system has no flock, a recorded PID that is
no longer alive marks the lock stale). While the lock is held, temporary files a killed
writer left behind are removed. Locks are re-entrant within a process, and
:func:`holding_run_locks` keeps every lock taken inside it until it ends (a CLI verb that
trains and then writes its evaluation into the same folder).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexsnn.deploy import freeze_biases, strip_batchnorm
from flexsnn.errors import CheckpointError, FlexSNNError, RunFolderBusyError, StorageError, describe_os_error
from flexsnn.io import ensure_dir, remove_stale_temp_files
from flexsnn.train import load_model
from flexsnn.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, read_run_config
from flexsnn.train.distributed import get_rank, get_world_size

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: PID files only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "check_output_dir",
    "check_run_dir",
    "claim_output_dir",
    "claim_run_dir",
    "holding_run_locks",
    "is_deployed",
    "load_deployed",
    "load_run",
    "prepare_run_dir",
    "run_folder_lock",
]

LOCK_FILE = ".flexsnn.lock"
RUN_FILES = (CONFIG_FILE, MODEL_FILE, CHECKPOINT_FILE)
log = logging.getLogger("flexsnn")

_held: dict[Path, list] = {}  # resolved folder -> [fd, depth]
_sessions: list[set[Path]] = []  # folders whose locks a holding_run_locks block keeps


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _read_holder(fd: int) -> tuple[int | None, str]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None, ""
    pid, _, what = text.partition(" ")
    return (int(pid), what) if pid.isdigit() else (None, text)


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike, what: str = "flexsnn", enabled: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of folder ``run_dir`` (created if needed) while the block runs.

    ``what`` is recorded with the PID for the message another process gets. ``enabled=False``
    (ranks other than 0 under torchrun) does nothing.
    """
    folder = Path(run_dir)
    if not enabled:
        yield folder
        return
    ensure_dir(folder, "run folder")
    key = folder.resolve()
    if key in _held:  # re-entrant: this process holds it already
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
            _release_if_unused(key)
        return
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise StorageError(f"cannot lock run folder {folder}: {describe_os_error(exc, path)}") from None
    try:
        _acquire(fd, folder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]
    if _sessions:  # kept until the innermost holding_run_locks block ends
        _sessions[-1].add(key)
    removed = remove_stale_temp_files(folder)
    if removed:
        log.info(f"removed {len(removed)} temporary file(s) an interrupted writer left in {folder}")
    try:
        yield folder
    finally:
        _held[key][1] -= 1
        _release_if_unused(key)


def _acquire(fd: int, folder: Path) -> None:
    pid, what = _read_holder(fd)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # a PID still recorded here is that of a holder that exited: stale
        except BlockingIOError:
            pid, what = _read_holder(fd)
            note = "" if pid is None or _pid_alive(pid) else " (it has exited; a process it started still holds it)"
            raise RunFolderBusyError(
                f"run folder {folder} is in use by process {pid if pid is not None else '?'}"
                f"{f' ({what})' if what else ''}{note}; wait for it to finish or choose another folder"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise StorageError(
                    f"cannot lock run folder {folder}: {describe_os_error(exc, folder / LOCK_FILE)}"
                ) from None
    # No flock here (some network file systems): the recorded PID decides.
    if pid is not None and pid != os.getpid() and _pid_alive(pid):
        raise RunFolderBusyError(
            f"run folder {folder} is in use by process {pid}{f' ({what})' if what else ''}; "
            "wait for it to finish or choose another folder"
        )


def _release_if_unused(key: Path) -> None:
    entry = _held.get(key)
    if entry is None or entry[1] > 0 or any(key in s for s in _sessions):
        return
    fd = entry[0]
    del _held[key]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # releases the flock


@contextlib.contextmanager
def holding_run_locks() -> Iterator[None]:
    """Every run-folder lock taken inside this block is held until the block ends."""
    session: set[Path] = set()
    _sessions.append(session)
    try:
        yield
    finally:
        _sessions.remove(session)
        for key in session:
            _release_if_unused(key)


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool, overwrite: bool = False) -> Path:
    """Refuse to write over an existing run unless resuming (or explicitly overwriting);
    create the folder. Nothing is locked: see :func:`claim_run_dir`."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, resume, overwrite)
    return ensure_dir(run_dir, "run folder")


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} is a file, not a folder; choose another --out")
    existing = [p for p in RUN_FILES if (run_dir / p).exists()]
    if resume:
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise CheckpointError(f"--resume given but {run_dir / CHECKPOINT_FILE} does not exist")
    elif existing and not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or choose another --out"
        )


def check_run_dir(
    run_dir: str | os.PathLike, resume: bool, overwrite: bool = False, what: str = "flexsnn", enabled: bool = True
) -> None:
    """The refusals of :func:`claim_run_dir` (a busy folder, a run already there, a resume
    without a checkpoint) before any work starts: a missing folder is not created, and an
    existing one is locked only while it is checked. The claim checks again."""
    with contextlib.ExitStack() as held:
        _checked_run_dir(Path(run_dir), resume, overwrite, what, enabled, held, create=False)


@contextlib.contextmanager
def claim_run_dir(
    run_dir: str | os.PathLike, resume: bool, overwrite: bool = False, what: str = "flexsnn", enabled: bool = True
) -> Iterator[Path]:
    """:func:`prepare_run_dir` under the folder's lock, held while the block runs; the checks
    run again once the lock is held (another writer may have finished in between).

    Under torchrun rank 0 (``enabled=True``) decides alone and every other rank
    (``enabled=False``) gets its verdict: a refusal (a busy folder, a run already there) is
    raised on every rank with the same message, so none waits at a barrier for a rank that
    gave up."""
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:
        folder = _checked_run_dir(run_dir, resume, overwrite, what, enabled, held, create=True)
        if not enabled:
            folder = ensure_dir(run_dir, "run folder")
        yield folder


def _checked_run_dir(
    run_dir: Path, resume: bool, overwrite: bool, what: str, enabled: bool, held: contextlib.ExitStack, create: bool
) -> Path:
    """Check run_dir on rank 0 (the folder's lock entered into ``held``; a missing folder is
    created and locked only when ``create``) and raise rank 0's refusal on every rank."""
    folder = run_dir
    refusal: FlexSNNError | OSError | None = None
    if enabled:
        try:
            # An existing folder is locked before it is checked, so that a folder another process
            # is still writing is reported as busy, not as a finished run; a missing one is checked
            # first so that a refused command creates nothing.
            if not run_dir.is_dir():
                _check_run_dir(run_dir, resume, overwrite)
            if create or run_dir.is_dir():
                folder = held.enter_context(run_folder_lock(run_dir, what))
                _check_run_dir(folder, resume, overwrite)
        except (FlexSNNError, OSError) as exc:
            refusal = exc
    refusal = _main_rank_verdict(refusal)
    if refusal is not None:
        raise refusal
    return folder


def _main_rank_verdict(refusal: FlexSNNError | OSError | None) -> FlexSNNError | OSError | None:
    """Rank 0's refusal (or None) on every rank of a torch.distributed group, as the same error
    class with the same message; ``refusal`` itself when not distributed."""
    if get_world_size() == 1:
        return refusal
    if isinstance(refusal, FlexSNNError) or refusal is None:
        sent: list = [None if refusal is None else (type(refusal).__name__, str(refusal))]
    else:  # an OSError: the line the CLI prints for it
        sent = [("StorageError", describe_os_error(refusal))]
    torch.distributed.broadcast_object_list(sent, src=0)
    if get_rank() == 0 or sent[0] is None:
        return refusal
    kind, message = sent[0]
    return _error_classes().get(kind, FlexSNNError)(message)


def _error_classes(cls: type = FlexSNNError) -> dict[str, type]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_error_classes(sub))
    return found


def check_output_dir(
    out: str | os.PathLike, outputs: Iterable[str], overwrite: bool = False, explicit: bool = True
) -> Path:
    """Refuse to write ``outputs`` (file names) into folder ``out`` when that would replace
    something silently: an ``explicit`` ``--out`` (not the verb's default folder inside the
    run it reads) that holds a run (another run's folder) or any of ``outputs`` (earlier
    results) is refused unless ``overwrite``. The default folder is the run's own; its
    earlier results are replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a folder; choose another --out")
    if explicit and not overwrite:
        runs = [p for p in RUN_FILES if (out / p).exists()]
        if runs:
            raise CheckpointError(
                f"--out {out} holds a run ({', '.join(runs)}); writing there would replace its "
                "results: choose another --out or pass --overwrite"
            )
        earlier = [p for p in outputs if (out / p).exists()]
        if earlier:
            raise CheckpointError(
                f"--out {out} already holds {', '.join(earlier)}; choose another --out or pass "
                "--overwrite to replace them"
            )
    return out


@contextlib.contextmanager
def claim_output_dir(
    out: str | os.PathLike,
    outputs: Iterable[str],
    overwrite: bool = False,
    explicit: bool = True,
    what: str = "flexsnn",
) -> Iterator[Path]:
    """:func:`check_output_dir`, then the folder's lock while the block writes; checked again
    under the lock."""
    outputs = list(outputs)
    check_output_dir(out, outputs, overwrite, explicit)
    with run_folder_lock(out, what) as folder:
        check_output_dir(folder, outputs, overwrite, explicit)
        yield folder


def is_deployed(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a deployed run (its config.json has a ``deploy`` section)."""
    path = Path(run_dir) / CONFIG_FILE
    return path.is_file() and "deploy" in read_run_config(run_dir)


def load_deployed(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a deployed (bias-free, BN-folded) run written by :func:`flexsnn.runs.prepare_deployment`."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not is_deployed(run_dir):
        raise CheckpointError(
            f"{run_dir} is not a deployed run (no 'deploy' section in {CONFIG_FILE}); "
            "run `flexsnn deploy prepare --run RUN --out OUT` first"
        )
    model, config = load_model(run_dir, device, prepare=strip_batchnorm)
    try:
        freeze_biases(model)  # raises if a saved bias is not zero
    except FlexSNNError as exc:  # InputError naming the layer
        raise CheckpointError(f"{run_dir / MODEL_FILE} is not a deployed model ({exc})") from None
    return model, config


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model and config of any run folder: deployed via :func:`load_deployed`, trained via
    :func:`flexsnn.train.load_model`."""
    if is_deployed(run_dir):
        return load_deployed(run_dir, device)
    return load_model(run_dir, device)
