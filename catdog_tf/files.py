"""File helpers every layer shares: every path goes through tf.io.gfile, so records, caches,
runs and reports can live on gs://, hdfs:// or TF's in-memory ram:// as well as on local disk.

Writes are atomic (a temporary name, then a rename) so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import uuid

import numpy as np
import tensorflow as tf

gfile = tf.io.gfile


def is_remote(path: str | os.PathLike) -> bool:
    """A URL-like path (gs://, hdfs://, ram://, ...), not a local file name."""
    return "://" in str(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    """Path join that keeps a URL's scheme (os.path.join does too on POSIX; one rule either way)."""
    return posixpath.join(str(base), *parts) if is_remote(base) else os.path.join(str(base), *parts)


def name(path: str | os.PathLike) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def parent(path: str | os.PathLike) -> str:
    return posixpath.dirname(str(path).rstrip("/")) if is_remote(path) else os.path.dirname(os.fspath(path))


def exists(path: str | os.PathLike) -> bool:
    return gfile.exists(str(path))


def isdir(path: str | os.PathLike) -> bool:
    return gfile.isdir(str(path))


def makedirs(path: str | os.PathLike) -> None:
    if str(path):
        gfile.makedirs(str(path))


def listdir(path: str | os.PathLike) -> list[str]:
    return sorted(gfile.listdir(str(path)))


def glob(pattern: str | os.PathLike) -> list[str]:
    return sorted(gfile.glob(str(pattern)))


def remove(path: str | os.PathLike) -> None:
    if gfile.exists(str(path)):
        gfile.remove(str(path))


def rmtree(path: str | os.PathLike) -> None:
    if gfile.exists(str(path)):
        gfile.rmtree(str(path))


def size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file under a folder (e.g. a SavedModel)."""
    path = str(path)
    if gfile.isdir(path):
        return sum(gfile.stat(join(d, f)).length for d, _, names in gfile.walk(path) for f in names)
    return gfile.stat(path).length


def open(path: str | os.PathLike, mode: str = "r"):  # noqa: A001 - the gfile twin of builtins.open
    return gfile.GFile(str(path), mode)


def read_bytes(path: str | os.PathLike) -> bytes:
    with gfile.GFile(str(path), "rb") as f:
        return f.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to path atomically (parent folders created)."""
    path = str(path)
    makedirs(parent(path))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):  # a failed write (disk full, interrupted) leaves nothing behind
            gfile.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with gfile.GFile(str(path), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
