"""Atomic file writes, bounded JSON/YAML readers, and a small schema checker for what they read.

Writes: every file flexsnn writes goes through :func:`atomic_write`: the content is written to
a temporary file ``.NAME.PID-RANDOM.tmp`` in the same folder, created with the process umask
(as ``open`` would create it), and moved into place with ``os.replace``, so a killed process
leaves either the old file or the new one, never a torn one. The temporary files a killed
process left behind are removed by :func:`remove_stale_temp_files` (run before every write of
the same name, and by run-folder preparation): a file whose writer's PID is no longer alive
is stale. Operating-system failures (disk full, read-only file system, a path component that
is a file, no permission) raise :class:`flexsnn.errors.StorageError` naming the path.

Reads: :func:`read_json`, :func:`read_yaml` and :func:`parse_json` refuse files larger than
``max_bytes``, values nested deeper than ``max_depth`` and documents of more than
``max_items`` values (YAML aliases count each time they are used), and JSON objects with
duplicate keys, with one-line errors naming the file. Give them a ``schema`` and the value is
checked by :func:`check_schema` too.

Schemas are plain values: ``Int(min=0)``, ``Float(min=0, finite=True)``, ``Str(choices=...)``,
``Bool()``, ``Nullable(spec)``, ``Either(spec, ...)``, ``ListOf(spec)``, ``MapOf(spec)``, ``Dict({...})`` (a key ending
in ``?`` is optional) or a Python type. A mismatch raises the reader's error class with a line
like ``config.json: key 'model.kwargs' must be a mapping, got [1, 2]``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import numbers
import os
import re
import secrets
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flexsnn.errors import CheckpointError, ConfigError, FlexSNNError, StorageError, describe_os_error

# Run configs, metrics, recipes and NIR metadata are far below these.
MAX_BYTES = 64 * 2**20
MAX_DEPTH = 64
MAX_ITEMS = 5_000_000

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-[0-9a-f]+\.tmp$")
_OLD_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp names (no PID)


# --- writes --------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    OSErrors (of the body too) come out as StorageError naming ``path``; the previous file
    is untouched and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent, path.name)
        tmp_path = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        # O_EXCL: never write through an existing file or link; mode 0o666 & ~umask like open().
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {_explain(exc, path)}") from None
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if isinstance(exc, FlexSNNError):
            raise
        if exc.filename is not None and str(exc.filename) in (str(tmp_path), str(path)):
            exc.filename = None  # the message names the path already (never the temporary one)
        raise StorageError(f"cannot write {path}: {describe_os_error(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create folder ``path`` (and its parents) if needed; StorageError naming the path when the
    OS refuses or a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorageError(f"cannot use {what} {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {what} {path}: {_explain(exc, path / '_')}") from None
    return path


def _explain(exc: OSError, path: Path) -> str:
    # mkdir under a file says "File exists" / "Not a directory": name the file in the way.
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{parent} is a file, not a folder"
                break
    return describe_os_error(exc, path)


def remove_stale_temp_files(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` whose writing process is gone.

    ``target``: only those of this file name. A file carries its writer's PID; files of a
    live process (another writer in progress) are kept. Temporary files of older flexsnn
    versions carry no PID and are removed as stale. Returns the paths removed.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is not None:
            if _pid_alive(int(match["pid"])):
                continue
        else:
            match = _OLD_TEMP_NAME.match(entry.name)
            if match is None:
                continue
        if target is not None and match["target"] != target:
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists, owned by someone else (or not a PID at all)
    return True


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save named numpy arrays as an uncompressed .npz, atomically (no pickled objects)."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_arrays(path: str | os.PathLike, what: str = "array file") -> dict[str, np.ndarray]:
    """Load a .npz written by :func:`save_arrays`; pickled objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({exc})") from None


# --- bounded readers -----------------------------------------------------------------------


def read_text(
    path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES, error: type[FlexSNNError] = CheckpointError
) -> str:
    """The UTF-8 text of ``path``, refusing files over ``max_bytes``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {describe_os_error(exc, path)}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than {max_bytes} bytes; refusing to read it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is corrupt (not UTF-8 text: {exc})") from None


def parse_json(
    text: str,
    source: str,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    schema: Any = None,
    error: type[FlexSNNError] = CheckpointError,
) -> Any:
    """``json.loads`` with nesting / size caps, duplicate keys refused, and an optional schema.

    ``source`` names the file (or the file and its part) in error messages.
    """
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise error(f"{source} is ambiguous: key {exc.args[0]!r} appears twice in one object") from None
    except RecursionError:
        raise error(f"{source} is nested too deeply (more than {max_depth} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise error(f"{source} is corrupt (not valid JSON: {exc})") from None
    check_nesting(value, source, max_depth, max_items, error)
    if schema is not None:
        check_schema(value, schema, source, error)
    return value


def read_json(
    path: str | os.PathLike,
    what: str = "JSON file",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    schema: Any = None,
    error: type[FlexSNNError] = CheckpointError,
) -> Any:
    """Read a JSON file with a size cap, a nesting cap and (optionally) a schema.

    A missing or malformed file raises ``error`` (CheckpointError unless told otherwise)
    naming ``what`` and the path; a file the OS cannot read raises StorageError.
    """
    text = read_text(path, what, max_bytes, error)
    return parse_json(text, f"{what} {path}", max_depth, max_items, schema, error)


def read_yaml(
    path: str | os.PathLike,
    what: str = "YAML file",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    schema: Any = None,
    error: type[FlexSNNError] = ConfigError,
) -> Any:
    """Read a YAML (or JSON) file with the same caps as :func:`read_json`; only plain YAML
    types are built (``yaml.safe_load``)."""
    import yaml

    text = read_text(path, what, max_bytes, error)
    source = f"{what} {path}"
    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise error(f"{source} is nested too deeply (more than {max_depth} levels)") from None
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML/JSON ({' '.join(str(exc).split())})") from None
    check_nesting(value, source, max_depth, max_items, error)
    if schema is not None:
        check_schema(value, schema, source, error)
    return value


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def check_nesting(
    value: Any,
    source: str,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    error: type[FlexSNNError] = CheckpointError,
) -> None:
    """Refuse containers nested deeper than ``max_depth`` or more than ``max_items`` values in
    all (iterative: no recursion, so a self-referencing YAML alias cannot loop forever)."""
    stack = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_items:
            raise error(f"{source} holds more than {max_items} values; refusing to use it")
        if isinstance(item, Mapping):
            children: Sequence = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > max_depth:
            raise error(f"{source} is nested too deeply (more than {max_depth} levels)")
        stack.extend((child, depth + 1) for child in children)


# --- schemas -------------------------------------------------------------------------------


class Spec:
    """A schema node: ``problem(value) -> None`` if ``value`` fits, else what was expected."""

    def problem(self, value: Any, where: str, source: str, error: type[FlexSNNError]) -> str | None:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


class Int(Spec):
    """An integer (not a bool) in ``[min, max]``."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def problem(self, value, where, source, error):
        if (
            not _is_int(value)
            or (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
        ):
            return f"an integer{_bounds(self.min, self.max)}"
        return None


class Float(Spec):
    """A real number (ints accepted, bools not) in ``[min, max]``; finite unless ``finite=False``."""

    def __init__(
        self, min: float | None = None, max: float | None = None, finite: bool = True, min_exclusive: bool = False
    ) -> None:
        self.min, self.max, self.finite, self.min_exclusive = min, max, finite, min_exclusive

    def problem(self, value, where, source, error):
        if self.min_exclusive and self.min is not None:
            expected = f"a number > {self.min}" + (f" and <= {self.max}" if self.max is not None else "")
        else:
            expected = f"a {'finite ' if self.finite else ''}number{_bounds(self.min, self.max)}"
        if not _is_number(value):
            return expected
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return expected
        if self.min is not None and (value < self.min or (self.min_exclusive and value == self.min)):
            return expected
        if self.max is not None and value > self.max:
            return expected
        return None


class Str(Spec):
    """A string, optionally one of ``choices``."""

    def __init__(self, choices: Sequence[str] | None = None) -> None:
        self.choices = tuple(choices) if choices is not None else None

    def problem(self, value, where, source, error):
        if not isinstance(value, str):
            return "a string" if self.choices is None else f"one of {', '.join(map(repr, self.choices))}"
        if self.choices is not None and value not in self.choices:
            return f"one of {', '.join(map(repr, self.choices))}"
        return None


class Bool(Spec):
    def problem(self, value, where, source, error):
        return None if isinstance(value, bool) else "true or false"


class AnyValue(Spec):
    def problem(self, value, where, source, error):
        return None


class Nullable(Spec):
    """``None`` or a value matching ``spec``."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def problem(self, value, where, source, error):
        if value is None:
            return None
        found = _problem(self.spec, value, where, source, error)
        return None if found is None else f"null or {found}"


class Either(Spec):
    """A value matching any of ``specs``."""

    def __init__(self, *specs: Any) -> None:
        self.specs = specs

    def problem(self, value, where, source, error):
        found = []
        for spec in self.specs:
            expected = _problem(spec, value, where, source, error)
            if expected is None:
                return None
            found.append(expected)
        return " or ".join(found)


class ListOf(Spec):
    """A list (or tuple) whose items all match ``spec``, of ``min_len``..``max_len`` items."""

    def __init__(self, spec: Any = None, min_len: int = 0, max_len: int | None = None) -> None:
        self.spec, self.min_len, self.max_len = spec, min_len, max_len

    def problem(self, value, where, source, error):
        if (
            not isinstance(value, (list, tuple))
            or len(value) < self.min_len
            or (self.max_len is not None and len(value) > self.max_len)
        ):
            if self.max_len == self.min_len:
                size = f" of {self.min_len} items"
            elif self.min_len or self.max_len is not None:
                size = f" of {self.min_len}..{self.max_len if self.max_len is not None else ''} items"
            else:
                size = ""
            return f"a list{size}"
        if self.spec is not None:
            for i, item in enumerate(value):
                _check(self.spec, item, f"{where}[{i}]", source, error)
        return None


class MapOf(Spec):
    """A mapping of string keys to values matching ``spec``."""

    def __init__(self, spec: Any = None) -> None:
        self.spec = spec

    def problem(self, value, where, source, error):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return "a mapping with string keys"
        if self.spec is not None:
            for key, item in value.items():
                _check(self.spec, item, _join(where, key), source, error)
        return None


class Dict(Spec):
    """A mapping with the given keys (``"name?"`` = optional); other keys are refused unless
    ``extra=True``."""

    def __init__(self, fields: Mapping[str, Any], extra: bool = False) -> None:
        self.fields = {k.rstrip("?"): (spec, k.endswith("?")) for k, spec in fields.items()}
        self.extra = extra

    def problem(self, value, where, source, error):
        if not isinstance(value, Mapping):
            return "a mapping" + (f" with keys {sorted(self.fields)}" if self.fields and not where else "")
        for key, (spec, optional) in self.fields.items():
            if key not in value:
                if not optional:
                    raise error(f"{source}: key {_join(where, key)!r} is missing")
                continue
            _check(spec, value[key], _join(where, key), source, error)
        if not self.extra:
            unknown = sorted(map(str, set(value) - set(self.fields)))
            if unknown:
                raise error(
                    f"{source}: unknown key(s) {unknown}"
                    + (f" in {where!r}" if where else "")
                    + f"; expected {sorted(self.fields)}"
                )
        return None


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def _problem(spec: Any, value: Any, where: str, source: str, error) -> str | None:
    if isinstance(spec, Spec):
        return spec.problem(value, where, source, error)
    if isinstance(spec, type):
        if spec is float:
            return None if _is_number(value) else "a number"
        if spec is int:
            return None if _is_int(value) else "an integer"
        return None if isinstance(value, spec) else _TYPE_NAMES.get(spec, f"a {spec.__name__}")
    if isinstance(spec, Mapping):
        return Dict(spec).problem(value, where, source, error)
    raise TypeError(f"not a schema: {spec!r}")


def _check(spec: Any, value: Any, where: str, source: str, error) -> None:
    expected = _problem(spec, value, where, source, error)
    if expected is not None:
        place = f"key {where!r}" if where else "the top level"
        raise error(f"{source}: {place} must be {expected}, got {_short(value)}")


def check_schema(value: Any, schema: Any, source: str, error: type[FlexSNNError] = ConfigError) -> Any:
    """Check ``value`` against ``schema`` (see the module docstring); return ``value``.

    The first mismatch raises ``error`` with one line naming ``source`` (the file) and the
    dotted key, the expected form and the value found.
    """
    _check(schema, value, "", source, error)
    return value


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "AnyValue",
    "Bool",
    "Dict",
    "Either",
    "Float",
    "Int",
    "ListOf",
    "MapOf",
    "Nullable",
    "Spec",
    "Str",
    "atomic_write",
    "check_nesting",
    "ensure_dir",
    "check_schema",
    "load_arrays",
    "parse_json",
    "read_json",
    "read_text",
    "read_yaml",
    "remove_stale_temp_files",
    "save_arrays",
    "write_json",
]


# ----------------------------------------------------------------------------- user factories
FACTORY_MARK = "__flexsnn_factory__"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def mark_factory(kind: str):
    """Decorator marking a function as a flexsnn ``kind`` factory ("model" / "dataset").

    Run configs name factories by import path (``package.module:function``); only marked
    functions are called, so a config file cannot make flexsnn call an arbitrary function.
    """

    def mark(fn):
        setattr(fn, FACTORY_MARK, kind)
        return fn

    return mark


def is_import_path(name: object) -> bool:
    return isinstance(name, str) and ":" in name


def import_factory(path: str, kind: str, what: str):
    """The ``kind`` factory named ``package.module:function``: imports that module only.

    Raises ConfigError when the path is malformed, the module or function is missing, or the
    function is not marked with :func:`mark_factory` for ``kind`` (nothing is called).
    """
    if not isinstance(path, str) or not _IMPORT_PATH.match(path):
        raise ConfigError(f"{what} must be a registered name or an import path 'package.module:function', got {path!r}")
    module_name, attr = path.split(":")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise ConfigError(f"{what} {path!r}: the standard library holds no flexsnn {kind} factories")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {path!r}: module {module_name!r} cannot be imported ({exc}); is it installed or on PYTHONPATH?"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}")
    if getattr(fn, FACTORY_MARK, None) != kind:
        decorator = "flexsnn.models.model_factory" if kind == "model" else "flexsnn.data.dataset_factory(...)"
        raise ConfigError(f"{what} {path!r} is not marked as a flexsnn {kind} factory; decorate it with @{decorator}")
    return fn
