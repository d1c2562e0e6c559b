"""File helpers every layer shares: every path goes through tf.io.gfile, so records, caches,
runs and reports can live on gs://, hdfs:// or TF's in-memory ram:// as well as on local disk.

Writes are atomic (a temporary name, then a rename) so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import uuid
import zipfile

import numpy as np
import tensorflow as tf

from catdog_tf import localio
from catdog_tf.errors import UserError

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


def walk_files(path: str | os.PathLike) -> list[str]:
    """Every file under a folder, at any depth, sorted."""
    return sorted(join(d, f) for d, _, names in gfile.walk(str(path)) for f in names)


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
        return sum(gfile.stat(f).length for f in walk_files(path))
    return gfile.stat(path).length


def open(path: str | os.PathLike, mode: str = "r"):  # noqa: A001 - the gfile twin of builtins.open
    if "r" in mode and not is_remote(path):
        localio.check_regular(path)  # a FIFO or device would block or never end
    return gfile.GFile(str(path), mode)


def check_regular(path: str | os.PathLike, max_bytes: int = localio.MAX_BINARY_BYTES) -> None:
    """Before a library (Keras, h5py, zipfile) opens `path` itself: a regular file within
    max_bytes, or a folder (a SavedModel), else OSError naming it."""
    if is_remote(path):
        if not gfile.isdir(str(path)) and gfile.stat(str(path)).length > max_bytes:
            raise OSError(0, f"file too large (the limit is {max_bytes:,} bytes)", str(path))
    elif not os.path.isdir(path):
        localio.check_regular(path, max_bytes)


def read_bytes(path: str | os.PathLike, max_bytes: int = localio.MAX_BINARY_BYTES) -> bytes:
    """The bytes of a regular file, at most max_bytes (catdog_tf.localio): anything else is an
    OSError naming the file, never a hang or an unbounded read."""
    if not is_remote(path):
        return localio.read(path, max_bytes)
    path = str(path)
    try:
        st = gfile.stat(path)
        if st.is_directory:
            raise OSError(0, "a folder, not a file", path)
        if st.length > max_bytes:
            raise OSError(0, f"file too large ({st.length:,} bytes; the limit is {max_bytes:,})", path)
        with gfile.GFile(path, "rb") as f:
            data = f.read(st.length + 1)  # its size, not the cap (read() allocates what it is asked)
    except tf.errors.OpError as e:
        raise OSError(0, e.message, path) from None
    if len(data) > st.length:
        raise OSError(0, "the file grew while it was read", path)
    return data


def read_text(path: str | os.PathLike, max_bytes: int = localio.MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file (lists, manifests, CSVs), bounded; other bytes are a UserError naming it."""
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """A JSON file, bounded; malformed JSON is a UserError naming the file and the place."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a valid {what} ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4,300 digits, nesting past the stack
        raise UserError(f"{path}: not a valid {what} ({type(e).__name__}: {str(e)[:120]})") from None


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str):
    """Any error while a library reads `path` (a damaged zip, h5 or pickle, a refused layer, a
    format it does not know) becomes one UserError naming the file: the file is the problem."""
    try:
        yield
    except (UserError, KeyboardInterrupt, MemoryError):
        raise
    except OSError as e:
        if getattr(e, "filename", None):
            raise
        raise UserError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - every library failure on a bad file, one line
        first = (getattr(e, "message", None) or str(e)).strip().splitlines()
        raise UserError(f"{path}: cannot read {what}: {type(e).__name__}: {first[0] if first else ''}"[:600]) \
            from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to path atomically (parent folders created)."""
    path = str(path)
    makedirs(parent(path))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException as e:
        if gfile.exists(tmp):  # a failed write (disk full, interrupted) leaves nothing behind
            gfile.remove(tmp)
        if isinstance(e, tf.errors.OpError):  # disk full is an OutOfRangeError here: name the file
            raise OSError(0, f"cannot write: {e.message.strip().splitlines()[0]}", path) from None
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of an .npz (no pickles); a damaged file is a UserError naming it."""
    data = read_bytes(path)
    with reading(path, "arrays (.npz)"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:  # members bounded by the file's real size
            if sum(i.file_size for i in zf.infolist()) > 2 * len(data) + 2**20:
                raise ValueError("its members inflate far beyond its size")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


RUN_README = """# {name}

What this run folder holds, and how to serve it.

- `model.keras`: float32 RGB 0..255 at {size} x {size} in, P(dog) out. It holds this package's
  layers, so it loads where `catdog_tf` is imported (`catdog_tf.inference.predictor.load_model`).
{saved_model}
For serving, one contract for every model of this package (JPEG/PNG bytes of any size in,
`p_dog` out, nothing of `catdog_tf` needed; also a plain-Keras `model.keras` and LiteRT):

    python -m catdog_tf.export --model={folder}/model.keras --out={folder}/export
"""


def write_run_readme(folder: str, name: str, size: int, saved_model: bool) -> None:
    """A run folder's README: what its model files take and give, and the one serving export."""
    sm = (f"- `saved_model/`: the same inputs (float32 pixels at {size} px), output `output_0` = P(dog);\n"
          "  a stage's artifact, not the serving contract below.\n") if saved_model else ""
    write_text(join(folder, "README.md"), RUN_README.format(name=name, size=size, saved_model=sm, folder=folder))


# The record each tool keeps in its output folder: an --out holding another tool's record is
# another tool's work, which this tool's files would overwrite or be mistaken for.
TOOL_RECORDS = {"records": "manifest.json", "train": "flags.json", "kfold": "kfold.json",
                "ensemble": "ensemble.json", "export": "export.json"}


def check_out(out: str, tool: str, inputs: dict[str, object] | None = None,
              scanned: tuple[str, ...] = ()) -> None:
    """Refuses (one UserError) an output folder that holds another tool's work, or that overlaps
    an input: an input equal to `out` or inside it (it would be overwritten), or `out` inside an
    input that is scanned for photos (`scanned` names those flags). `inputs`: flag -> path(s)."""
    here = _real(out)
    for other, record in TOOL_RECORDS.items():
        if other != tool and exists(join(out, record)) and not exists(join(out, TOOL_RECORDS[tool])):
            raise UserError(f"--out={out}: holds the work of `{other}` ({record}); give another folder")
    for flag, p in _each(inputs or {}):
        if not p or not exists(p):  # (a keyword such as --weights=auto, or nothing yet)
            continue
        there = _real(p)
        if there == here or there.startswith(here.rstrip("/") + "/"):
            raise UserError(f"--{flag}={p} is inside --out={out}: the output would overwrite it")
        if flag in scanned and here.startswith(there.rstrip("/") + "/"):
            raise UserError(f"--out={out} is inside --{flag}={p}: its own files would become inputs")


def check_output_file(out: str, flag: str, inputs: dict[str, object]) -> None:
    """An output file that is one of the inputs (a model, a predictions CSV) would destroy it."""
    for name, p in _each(inputs):
        inside = [_real(join(p, "model.keras"))] if p and isdir(p) else []  # a model folder's file
        if p and _real(out) in [_real(p), *inside]:
            raise UserError(f"--{flag}={out} is --{name}={p}: writing it would destroy the input")


def _each(inputs: dict[str, object]):
    """(flag, path) for every path of flag -> path or list of paths."""
    for flag, paths in inputs.items():
        for p in paths if isinstance(paths, (list, tuple)) else [paths]:
            yield flag, p


def _real(path) -> str:
    return str(path).rstrip("/") if is_remote(path) else os.path.realpath(os.fspath(path))
