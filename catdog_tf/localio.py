"""The one bounded reader of local files (no TensorFlow here, so tools that never load it use it
too; catdog_tf.files puts URLs beside it).

Every file the package opens is a regular file (a symlink is followed), opened without blocking
(a FIFO named as a photo, list or model must not wait for a writer), and read up to a cap, so a
special file, a huge or a growing file is an OSError naming it, never a hang or a memory blow-up.
"""

from __future__ import annotations

import os
import stat

MAX_PHOTO_BYTES = 100 * 2**20  # no pet photo is larger; a bigger "photo" is a mistake or an attack
MAX_TEXT_BYTES = 64 * 2**20  # manifests, exclusion lists, reports, CSVs of predictions
MAX_BINARY_BYTES = 16 * 2**30  # models, weights, feature caches: within this machine's memory

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _error(path, reason: str) -> OSError:
    # (errno 0, reason, path): cli prints "path: reason", a skip list prints the reason.
    return OSError(0, reason, os.fspath(path))


def check_regular(path, max_bytes: int = MAX_BINARY_BYTES) -> int:
    """The size of `path` when it is a regular file within max_bytes (stat only: nothing is
    opened, so a FIFO cannot block); otherwise OSError naming it and why."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as e:
        raise _error(path, e.strerror or str(e)) from None
    return _regular_size(path, st, max_bytes)


def _regular_size(path, st: os.stat_result, max_bytes: int) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise _error(path, f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')})")
    if st.st_size > max_bytes:
        raise _error(path, f"file too large ({st.st_size:,} bytes; the limit is {max_bytes:,})")
    return st.st_size


def read(path, max_bytes: int) -> bytes:
    """The bytes of a regular local file, at most max_bytes of them; OSError (naming the file)
    for anything else: missing, a folder, a FIFO or device, too large, grown while read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise _error(path, "a folder, not a file") from None
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as e:
        raise _error(path, e.strerror or str(e)) from None
    try:
        size = _regular_size(path, os.fstat(fd), max_bytes)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(size + 1)  # the file's size, not the cap: read() allocates what it is asked
        if len(data) > size:
            raise _error(path, "the file grew while it was read")
        return data
    finally:
        os.close(fd)
