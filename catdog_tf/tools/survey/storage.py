"""Paths the survey reads and writes: a local path through plain file I/O, a URL (gs://, hdfs://,
ram://) through tf.io.gfile.

catdog_tf.files imports TensorFlow at its top, which exploring a local folder must not pay for
(tests/test_layout.py; scan.py's process pool forks only without TensorFlow loaded): URL paths
use tf.io.gfile here, imported on first use. Local paths are Paths, URLs strings.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

from catdog_tf import localio


def is_remote(path: str | os.PathLike) -> bool:
    """A URL-like path (gs://, hdfs://, ram://, ...), as catdog_tf.files.is_remote."""
    return "://" in str(path)


def gfile() -> Any:
    """tf.io.gfile, for URL paths only."""
    import tensorflow as tf  # only remote paths (and records) pay for TensorFlow

    return tf.io.gfile


def as_path(path: str | os.PathLike) -> Any:
    """A local path as a Path, a URL as a string (Path would fold its '//')."""
    return str(path).rstrip("/") if is_remote(path) else Path(path)


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def join(base: Any, name: str) -> Any:
    return f"{base}/{name}" if isinstance(base, str) else base / name


def isdir(path: Any) -> bool:
    return gfile().isdir(path) if is_remote(path) else Path(path).is_dir()


def isfile(path: Any) -> bool:
    if is_remote(path):
        g = gfile()
        return g.exists(path) and not g.isdir(path)
    return Path(path).is_file()


def read_bytes(path: str | os.PathLike, max_bytes: int = localio.MAX_PHOTO_BYTES) -> bytes:
    """A file's bytes, bounded (catdog_tf.localio: regular files only, never blocking); OSError
    when it cannot be read (a URL's gfile errors too)."""
    if not is_remote(path):
        return localio.read(path, max_bytes)
    from catdog_tf import files  # loads TensorFlow: only for URLs

    return files.read_bytes(path, max_bytes)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes a report file (parent folders made); a URL atomically (temp name + rename), as
    catdog_tf.files.write_bytes does."""
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
        return
    g = gfile()
    g.makedirs(posixpath.dirname(str(path)))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with g.GFile(tmp, "wb") as f:
        f.write(data)
    g.rename(tmp, str(path), overwrite=True)
