"""Checkpoints: written atomically, read without unpickling anything.

A checkpoint is a ``.npz`` archive (``numpy.savez``) holding the arrays of a
training run's state and one more member, ``header``: UTF-8 JSON with

- ``format`` (:data:`FORMAT`) and ``format_version`` (:data:`FORMAT_VERSION`),
- ``kfrtrl_version``, the package version that wrote it,
- ``config``: the run's complete configuration as the caller states it (the
  command line records estimator spec, cell, sizes, dtype, optimizer, learning
  rate and schedule, clip, seeds and task; any JSON value may be added),
- ``state``: the nested state (dicts, lists, numbers, strings) with each array
  replaced by a reference ``{"__array__": name}``; tuples, slices, deques, dtypes and
  kfrtrl's dataclasses (a cell's cached layers) are tagged so that they come back as such,
- ``checksum``: SHA-256 over every array's name, dtype, shape and bytes.

It is read with ``numpy.load(allow_pickle=False)``: a file that would need an
unpickler (or any other foreign, truncated or corrupt file) raises ValueError
naming the path and the problem, and runs nothing. It is written to a
temporary file in the same directory, flushed and fsynced, then moved over
the target with ``os.replace`` (and the directory fsynced), so a crash at any
moment leaves either the previous checkpoint or the new one.
"""
import collections
import dataclasses
import hashlib
import importlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "kfrtrl-checkpoint"
FORMAT_VERSION = 2
_HEADER = "header"


def atomic_write(path, write):
    """Write a file through ``write(binary file object)`` so that ``path`` is never seen half-written.

    The data goes to a temporary file in the same directory (same file system:
    ``os.replace`` is atomic there), which is flushed and fsynced before it replaces
    ``path``; the directory is fsynced afterwards so the rename itself is durable.
    On any error the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
    write : callable
        ``write(fh)`` writes the whole content to the binary file object ``fh``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)



def atomic_json(path, obj):
    """Write ``obj`` as indented JSON (UTF-8) to ``path`` with :func:`atomic_write`.

    Parameters
    ----------
    path : str or os.PathLike
    obj : JSON-serialisable object (dicts, lists, numbers, strings)
    """
    text = json.dumps(obj, indent=1)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))

def save(path, state, config):
    """Write ``state`` (nested dicts/lists/tuples of arrays, numbers, strings) and ``config`` to ``path``.

    Written atomically (:func:`atomic_write`). Cost: one pass over the arrays for the checksum
    and one for writing.

    Parameters
    ----------
    path : str or os.PathLike
    state : dict
        Nested dicts, lists and tuples of numpy arrays, numbers, strings, None.
    config : dict or None
        JSON-serialisable (TypeError otherwise, naming the entry).
    """
    data = dumps(state, config)
    atomic_write(path, lambda fh: fh.write(data))


def dumps(state, config=None):
    """The bytes :func:`save` writes (for a checkpoint kept elsewhere, e.g. inside a torch state_dict).

    Parameters
    ----------
    state : dict, as for :func:`save`
    config : dict or None, as for :func:`save`

    Returns
    -------
    bytes
    """
    from . import __version__

    arrays = {}
    tree = _encode(state, arrays, "state")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kfrtrl_version": __version__,
              "config": _encode({} if config is None else config, None, "config"), "state": tree,
              "checksum": _checksum(arrays)}
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    members = dict(arrays)
    members[_HEADER] = np.frombuffer(text, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def load(path):
    """Read the checkpoint at ``path`` (nothing is unpickled); ValueError naming the path and the problem.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state : dict
    config : dict
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ValueError(f"checkpoint {path!r}: cannot be read ({exc.strerror or exc})") from None
    return loads(data, path)


def loads(data, path="<bytes>"):
    """Read :func:`dumps`'s bytes.

    Parameters
    ----------
    data : bytes
    path : str, names the source in errors

    Returns
    -------
    state : dict
    config : dict
    """
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single numpy array, not a kfrtrl checkpoint")
        with archive:
            if _HEADER not in archive.files:
                raise ValueError("no header: not a kfrtrl checkpoint")
            header = json.loads(archive[_HEADER].tobytes().decode("utf-8"))
            arrays = {name: archive[name] for name in archive.files if name != _HEADER}
    except ValueError as exc:
        raise ValueError(f"checkpoint {path!r}: {_plain(exc)}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint {path!r}: truncated or corrupt ({type(exc).__name__}: {exc})") from None
    _check_header(path, header, arrays)
    return _decode(header["state"], arrays, path), header["config"]


def _plain(exc):
    """A numpy/json ValueError as the reason for refusing the file."""
    text = str(exc)
    if "pickle" in text:
        return "holds pickled objects, which are never loaded (not a kfrtrl checkpoint, or a tampered one)"
    if isinstance(exc, json.JSONDecodeError):
        return f"corrupt header ({exc})"
    return text if "kfrtrl" in text else f"not a kfrtrl checkpoint ({text})"


def _check_header(path, header, arrays):
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r}: not a kfrtrl checkpoint (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"checkpoint {path!r}: corrupt header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r}: format version {header.get('format_version')!r}, this kfrtrl "
                         f"reads version {FORMAT_VERSION} (written by kfrtrl {header.get('kfrtrl_version')})")
    for key in ("config", "state", "checksum"):
        if key not in header:
            raise ValueError(f"checkpoint {path!r}: corrupt header (no {key!r})")
    if _checksum(arrays) != header["checksum"]:
        raise ValueError(f"checkpoint {path!r}: checksum mismatch (the arrays were altered or damaged)")


def _checksum(arrays):
    """SHA-256 (hex) over the arrays in name order: name, dtype, shape and bytes of each."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _encode(obj, arrays, where):
    """JSON-able tree of ``obj``; arrays go into ``arrays`` (None: arrays not allowed here).

    Besides JSON's own types: arrays, numpy scalars and dtypes, tuples, slices, deques
    and kfrtrl's dataclasses (the cells' cached layers), each tagged by a reserved key.
    """
    if isinstance(obj, np.ndarray) and arrays is not None:
        if obj.dtype.hasobject:
            raise TypeError(f"{where}: expected numeric arrays, got an object array")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) and not k.startswith("__") for k in obj):
            raise TypeError(f"{where}: expected string keys not starting with '__', got {sorted(map(repr, obj))}")
        return {k: _encode(v, arrays, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, collections.deque)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": items}
        return {"__deque__": items, "maxlen": obj.maxlen} if isinstance(obj, collections.deque) else items
    if isinstance(obj, slice):
        return {"__slice__": [obj.start, obj.stop, obj.step]}
    if isinstance(obj, np.dtype):
        return {"__dtype__": obj.str}
    if dataclasses.is_dataclass(obj) and type(obj).__module__.startswith("kfrtrl."):
        fields = {f.name: _encode(getattr(obj, f.name), arrays, f"{where}.{f.name}")
                  for f in dataclasses.fields(obj)}
        return {"__dataclass__": f"{type(obj).__module__}:{type(obj).__qualname__}", "fields": fields}
    raise TypeError(f"{where}: expected arrays, numbers, strings, dicts, lists or tuples, "
                    f"got {type(obj).__name__}")


def _decode(tree, arrays, path):
    """Inverse of :func:`_encode`; ValueError for a reference to nothing or a class outside kfrtrl."""
    if isinstance(tree, list):
        return [_decode(v, arrays, path) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__array__" in tree:
        if tree["__array__"] not in arrays:
            raise ValueError(f"checkpoint {path!r}: corrupt header (array {tree['__array__']!r} missing)")
        return arrays[tree["__array__"]]
    if "__tuple__" in tree:
        return tuple(_decode(v, arrays, path) for v in tree["__tuple__"])
    if "__deque__" in tree:
        return collections.deque(_decode(tree["__deque__"], arrays, path), maxlen=tree["maxlen"])
    if "__slice__" in tree:
        return slice(*tree["__slice__"])
    if "__dtype__" in tree:
        return np.dtype(tree["__dtype__"])
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__dataclass__" in tree:
        return _dataclass(tree["__dataclass__"], path)(**_decode(tree["fields"], arrays, path))
    return {k: _decode(v, arrays, path) for k, v in tree.items()}


def _dataclass(name, path):
    """The kfrtrl dataclass ``module:qualname``; nothing else is ever looked up."""
    module, _, qualname = str(name).partition(":")
    cls = None
    if module.startswith("kfrtrl.") and qualname.isidentifier():
        try:
            cls = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"checkpoint {path!r}: unknown record type {name!r} (written by another kfrtrl?)")
    return cls
