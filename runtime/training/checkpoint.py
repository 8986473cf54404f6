"""Checkpoints: the arrays of a training run (parameters, optimizer state) and a little JSON.

`save(path, arrays, meta)` writes one `.npz` file that NumPy alone can read: each array as a
`.npy` member, plus the member `__chainrule_checkpoint__`, a JSON string of `meta` (the
epoch, the model's name, the optimizer and its settings, ...) and a format number.

Why atomic: training runs are killed (out of memory, a preempted machine, Ctrl-C), and a
kill in the middle of writing leaves a truncated file. If that file *is* the checkpoint,
the run has lost both the new state and the old one. So the file is written to a temporary
file in the same folder, flushed and fsync'ed to disk, and only then renamed over `path`
with `os.replace`, which is atomic on POSIX and Windows alike (same folder, same file
system). At any moment `path` holds either the complete old checkpoint or the complete new
one; a failed write leaves no temporary file behind (compiler/files.py: `atomic_file`).

The members are written with a fixed timestamp, so the same arrays and meta give the same
bytes. Arrays are stored without pickle (object arrays are refused) and loaded without it:
loading a checkpoint never runs code.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from compiler.files import atomic_file
from ops.errors import ArgumentError, ChainruleError

META_KEY = "__chainrule_checkpoint__"
FORMAT = 1
_DATE = (1980, 1, 1, 0, 0, 0)      # the earliest a zip can record: the same bytes on every save


class CheckpointError(ChainruleError, ValueError):
    """A file that is not a chainrule checkpoint, or arrays / meta that cannot be saved."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the path given to `load`."""


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _meta_json(meta):
    if not isinstance(meta, dict):
        raise ArgumentError(f"meta must be a dict, got {type(meta).__name__}", op="checkpoint.save")
    for key, value in meta.items():
        try:
            json.dumps({key: value}, default=_json_default, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"meta[{key!r}] = {value!r} cannot be stored as JSON ({e}): use "
                                  f"numbers, strings, bools, None, lists and dicts", op="checkpoint.save") from None
    return json.dumps({"format": FORMAT, "meta": meta}, default=_json_default, sort_keys=True)


def _check_arrays(arrays):
    if not isinstance(arrays, dict):
        raise ArgumentError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}",
                            op="checkpoint.save")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ArgumentError(f"array names must be non-empty strings, got {name!r}", op="checkpoint.save")
        if name == META_KEY:
            raise ArgumentError(f"the name {META_KEY!r} is reserved for the checkpoint's meta",
                                op="checkpoint.save")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise CheckpointError(f"arrays[{name!r}] has dtype object, which can only be stored with "
                                  f"pickle: give numeric arrays", op="checkpoint.save")
        checked[name] = array
    return checked


def save(path, arrays, meta=None, compress=False):
    """Write `arrays` (dict name -> array) and `meta` (a JSON-able dict) to `path` atomically.

    The file is an ordinary .npz (`path` is used as given: no suffix is added). NumPy scalars
    and arrays in `meta` are stored as numbers and lists; tuples come back as lists.
    `compress=True` deflates the members (smaller, slower). Returns `path` as a string.
    """
    path = os.fspath(path)
    arrays = _check_arrays(arrays)
    text = _meta_json({} if meta is None else meta)
    members = list(arrays.items()) + [(META_KEY, np.array(text))]
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_file(path, durable=True) as tmp:
        with open(tmp, "wb") as f, zipfile.ZipFile(f, "w", compression=compression) as archive:
            for name, array in members:
                info = zipfile.ZipInfo(name + ".npy", date_time=_DATE)
                info.compress_type = compression
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
    return path


def load(path):
    """Read a checkpoint written by `save`: (arrays, meta), arrays a dict name -> np.ndarray.

    Raises CheckpointNotFoundError (a FileNotFoundError) when there is no file at `path`, and
    CheckpointError when the file is not a chainrule checkpoint (not an .npz, or an .npz
    without chainrule's meta, or one written by a newer chainrule)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        hint = "" if os.path.isdir(folder) else f" (the folder {folder} does not exist either)"
        raise CheckpointNotFoundError(f"no checkpoint at {path!r}{hint}", op="checkpoint.load")
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint file", op="checkpoint.load")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path!r} is a single .npy array (np.save), not a chainrule checkpoint "
                              f"(an .npz written by runtime.training.checkpoint.save)", op="checkpoint.load")
    if not magic.startswith(b"PK"):
        what = "it is empty" if not magic else f"it starts with {magic!r}"
        raise CheckpointError(f"{path!r} is not a chainrule checkpoint: not an .npz (zip) file, {what}",
                              op="checkpoint.load")
    try:
        with np.load(path, allow_pickle=False) as data:
            if META_KEY not in data.files:
                raise CheckpointError(f"{path!r} is an .npz file but not a chainrule checkpoint: it has no "
                                      f"{META_KEY!r} entry (was it written by np.savez rather than "
                                      f"runtime.training.checkpoint.save?); it holds "
                                      f"{', '.join(data.files) or 'nothing'}",
                                      op="checkpoint.load")
            text = str(data[META_KEY])
            arrays = {name: data[name] for name in data.files if name != META_KEY}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path!r} is not a readable chainrule checkpoint (a damaged .npz file: {e})",
                              op="checkpoint.load") from None
    try:
        record = json.loads(text)
        version, meta = record["format"], record["meta"]
    except (ValueError, TypeError, KeyError):
        raise CheckpointError(f"{path!r}: the {META_KEY!r} entry is not valid checkpoint meta",
                              op="checkpoint.load") from None
    if not isinstance(version, int) or version > FORMAT:
        raise CheckpointError(f"{path!r} is a checkpoint of format {version!r}; this chainrule reads "
                              f"format {FORMAT} and older: update chainrule", op="checkpoint.load")
    return arrays, meta


def load_model(path, model):
    """Put a training run's checkpoint (the "param/NAME" and "state/NAME" arrays the training
    loop saves) into `model` (a built Sequential); returns the checkpoint's meta. Every array
    is checked against the model (names, shapes, dtypes) before any is stored: a checkpoint of
    another model raises a CheckpointError naming the file and the array, and changes nothing."""
    arrays, meta = load(path)
    try:
        params = model.checked_parameters(_members(arrays, "param/"))
        states = model.checked_states(_members(arrays, "state/"))
    except ArgumentError as e:
        raise CheckpointError(f"{os.fspath(path)!r} does not fit the model: {e.bare_message}",
                              op="checkpoint.load") from None
    model.set_parameters(params)
    model.set_states(states)
    return meta


def _members(arrays, prefix):
    return {name[len(prefix):]: array for name, array in arrays.items() if name.startswith(prefix)}
