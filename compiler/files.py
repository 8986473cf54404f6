"""Files written whole or not at all: a temporary file beside the target, then `os.replace`,
which is atomic on POSIX and Windows alike (same folder, same file system). A crash or a
kill in the middle leaves the old file (or none), never half a new one, and a failed write
leaves no temporary file behind. Kernel files, tuning choices, dumps, pictures and
checkpoints are all written through here."""
from __future__ import annotations

import contextlib
import os
import uuid


@contextlib.contextmanager
def atomic_file(path, durable=False):
    """Yield a temporary path next to `path`; write it, and on success it replaces `path`.
    durable: fsync the file before the rename and the folder after it, so that a machine
    that crashes right after still has the new file (checkpoints). The folder is created
    if needed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if durable:
        _fsync_folder(folder)


def write_atomic(path, data):
    """Write text (or bytes) to `path` whole or not at all."""
    with atomic_file(path) as tmp, open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
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
