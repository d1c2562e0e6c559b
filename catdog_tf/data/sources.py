"""Where photos come from: Kaggle-layout folders, zips of them, or TFDS's `cats_vs_dogs`.

Discovery only lists files and what their names mean (catdog_tf.data.kaggle); reading and
checking the bytes is records.py's job. Every file found is either a Candidate or a
`skipped` entry with the reason.

A local input keeps its checks of what only exists locally (FIFOs, devices, symlinked
folders); a remote one (gs://, hdfs://, ram://, ...) is listed with tf.io.gfile.walk and read
through catdog_tf.files, under the same name rules and size limit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable

import tensorflow as tf

from catdog_tf import files, localio
from catdog_tf.data import kaggle
from catdog_tf.errors import UserError

_TFDS_HOST = "download.microsoft.com"  # where TFDS's cats_vs_dogs zip lives
MAX_FILE_BYTES = localio.MAX_PHOTO_BYTES


class RecordsError(UserError):
    """A problem with the input as a whole (not one bad file: those are skipped)."""


@dataclasses.dataclass
class Candidate:
    """One file found in an input, before it is read."""

    id: str
    label: int
    origin: str  # path shown to the user: file path or "archive.zip:member"
    read: Callable[[], bytes]


def read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file, at most max_bytes (the package's one bounded reader,
    catdog_tf.files.read_bytes); anything else raises OSError with the reason."""
    return files.read_bytes(path, max_bytes)


class _ZipReader:
    """Reads members of one zip; one ZipFile handle per thread (ZipFile is not thread-safe).
    A member is streamed and bounded: a zip bomb or a lying header can't exhaust memory."""

    def __init__(self, path: str, max_bytes: int):
        self.path, self.max_bytes = path, max_bytes
        self._local = threading.local()

    def member(self, info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            if info.flag_bits & 0x1:
                raise OSError("encrypted zip member")
            if info.file_size > self.max_bytes:
                raise OSError(f"zip member too large ({info.file_size:,} bytes; the limit is {self.max_bytes:,})")
            zf = getattr(self._local, "zf", None)
            if zf is None:
                zf = self._local.zf = _open_zip(self.path)
            try:
                with zf.open(info) as f:
                    data = f.read(self.max_bytes + 1)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                raise OSError(f"damaged zip member ({type(e).__name__}: {e})") from None
            if len(data) > self.max_bytes:
                raise OSError(f"zip member inflates past {self.max_bytes:,} bytes")
            return data

        return read


def _classify_group(names: list[tuple[str, str, Callable[[], bytes]]], skipped: list[dict]) -> list[Candidate]:
    """names: (basename, origin, reader) of one folder. The folder is labeled when most of its
    photo names are cat.N/dog.N, a test folder when most are N; the minority kind is skipped
    with the reason (one stray cat.N.jpg must not turn a test folder into training data)."""
    parsed = [(n, o, r, kaggle.parse(n)) for n, o, r in names]
    n_labeled = sum(1 for *_, kn in parsed if kn is not None and kn.labeled)
    n_test = sum(1 for *_, kn in parsed if kn is not None and not kn.labeled)
    labeled = n_labeled >= n_test and n_labeled > 0
    out = []
    for name, origin, reader, kn in sorted(parsed, key=lambda t: t[0]):
        if kn is None or kn.labeled != labeled:
            reason = kaggle.name_problem(name, labeled)
            if kn is not None:
                reason += f" ({n_labeled if labeled else n_test} of the folder's photos are named that way)"
            skipped.append({"file": origin, "reason": reason})
            continue
        out.append(Candidate(kn.id, kn.label, origin, reader))
    return out


def _discover_dir(root: Path, skipped: list[dict], max_bytes: int) -> list[Candidate]:
    """Every folder under root (symlinked folders are not followed), each classified on its own."""
    found = []
    for folder, dirs, leaves in os.walk(root, followlinks=False):
        for d in list(dirs):
            full = os.path.join(folder, d)
            if d.startswith("."):
                dirs.remove(d)  # .git, .ipynb_checkpoints and friends are not data
            elif os.path.islink(full):
                skipped.append({"file": full, "reason": "symlink to a folder (not followed)"})
            elif kaggle.parse(d) is not None:
                dirs.remove(d)
                skipped.append({"file": full, "reason": "a folder named like a photo (not searched)"})
        dirs.sort()
        names = [(f, os.path.join(folder, f), functools.partial(read_file, os.path.join(folder, f), max_bytes))
                 for f in sorted(leaves) if not f.startswith(".")]  # .DS_Store and friends are not data
        found += _classify_group(names, skipped) if names else []
    return found


def _discover_remote_dir(root: str, skipped: list[dict], max_bytes: int) -> list[Candidate]:
    """_discover_dir for a URL folder (gs://, hdfs://, ram://): listed with tf.io.gfile.walk,
    read through catdog_tf.files; there are no symlinks or special files to refuse there."""
    found = []
    for folder, dirs, names in tf.io.gfile.walk(root):
        for d in list(dirs):
            full = files.join(folder, d.rstrip("/"))
            if d.startswith("."):
                dirs.remove(d)  # .git, .ipynb_checkpoints and friends are not data
            elif kaggle.parse(d.rstrip("/")) is not None:
                dirs.remove(d)
                skipped.append({"file": full, "reason": "a folder named like a photo (not searched)"})
        dirs.sort()
        group = [(f, files.join(folder, f), functools.partial(read_file, files.join(folder, f), max_bytes))
                 for f in sorted(names) if not f.startswith(".")]
        found += _classify_group(group, skipped) if group else []
    return found


def _open_zip(path: str) -> zipfile.ZipFile:
    """A local zip by name; a remote one through a (seekable) gfile handle."""
    return zipfile.ZipFile(files.open(path, "rb") if files.is_remote(path) else path)


def _discover_zip(path: str, skipped: list[dict], max_bytes: int) -> list[Candidate]:
    try:
        zf = _open_zip(path)
    except (zipfile.BadZipFile, OSError, tf.errors.OpError) as e:
        raise RecordsError(f"{path}: not a readable zip archive, truncated or damaged ({e})") from None
    reader = _ZipReader(path, max_bytes)
    groups: dict[str, list] = {}
    with zf:
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")  # zips made on Windows may use backslashes
            if info.is_dir() or name.endswith("/"):
                continue
            parent, _, base = name.rpartition("/")
            if base.startswith(".") or "__MACOSX" in parent:
                continue
            groups.setdefault(parent, []).append((base, f"{path}:{info.filename}", reader.member(info)))
    return [c for parent in sorted(groups) for c in _classify_group(groups[parent], skipped)]


def discover(inputs: Iterable[str], max_bytes: int = MAX_FILE_BYTES) -> tuple[list[Candidate], list[dict]]:
    """Finds the photos of every input (folders are searched recursively, like zips);
    returns (candidates, skipped)."""
    candidates: list[Candidate] = []
    skipped: list[dict] = []
    for inp in inputs:
        if not str(inp).strip():  # an unset $VAR: Path("") would be the current folder
            raise RecordsError("--input=: an empty path (give a folder or a .zip)")
        if files.is_remote(inp):
            found = _discover_remote(str(inp), skipped, max_bytes)
            if not found:
                print(f"warning: {inp}: no cat.N.jpg / dog.N.jpg / N.jpg files found", file=sys.stderr)
            candidates.extend(found)
            continue
        path = Path(inp)
        if path.is_dir():
            found = _discover_dir(path, skipped, max_bytes)
        elif path.is_file() and (zipfile.is_zipfile(path) or path.suffix.lower() == ".zip"):
            found = _discover_zip(path, skipped, max_bytes)
        elif path.exists():
            raise RecordsError(f"{path}: --input must be a folder or a .zip archive")
        else:
            raise RecordsError(f"{path}: --input does not exist")
        if not found:
            print(f"warning: {path}: no cat.N.jpg / dog.N.jpg / N.jpg files found", file=sys.stderr)
        candidates.extend(found)
    return dedupe(candidates, skipped), skipped


def _discover_remote(path: str, skipped: list[dict], max_bytes: int) -> list[Candidate]:
    if files.isdir(path):
        return _discover_remote_dir(path, skipped, max_bytes)
    if files.exists(path):
        if path.lower().endswith(".zip"):
            return _discover_zip(path, skipped, max_bytes)
        raise RecordsError(f"{path}: --input must be a folder or a .zip archive")
    raise RecordsError(f"{path}: --input does not exist")


def dedupe(candidates: list[Candidate], skipped: list[dict]) -> list[Candidate]:
    """The same id twice (two inputs overlapping, cat.3.jpg beside cat.3.png): the first is
    kept, the others are reported."""
    first: dict[str, str] = {}
    unique = []
    for c in candidates:
        if c.id in first:
            skipped.append({"file": c.origin, "reason": f"duplicate id {c.id} (first seen in {first[c.id]})"})
        else:
            first[c.id] = c.origin
            unique.append(c)
    return unique


def tfds_candidates(data_dir: str | None = None) -> tuple[list[Candidate], list[dict]]:
    """TFDS's public `cats_vs_dogs` (PetImages, 23,262 photos) for online users with no
    Kaggle folder. Ids are made Kaggle-like: cat.tfds<N> / dog.tfds<N>."""
    try:
        import tensorflow_datasets as tfds  # optional: pip install -e ".[tfds]"
    except ImportError:
        raise RecordsError("no --input given, so TFDS's public cats_vs_dogs was requested, but "
                           "tensorflow-datasets is not installed: pip install -e \".[tfds]\", or pass "
                           "--input=FOLDER with Kaggle-layout files") from None

    def fail(why: str):
        return RecordsError(
            "no --input given, so the public TFDS 'cats_vs_dogs' data set was requested, but it "
            f"could not be downloaded or loaded ({why}). Offline, pass --input=FOLDER with "
            "Kaggle-layout files (train/cat.N.jpg, train/dog.N.jpg, test/N.jpg) or a zip of them.")

    try:
        builder = tfds.builder("cats_vs_dogs", data_dir=data_dir)
        if not builder.is_prepared():
            # TFDS retries a dead download for minutes; ask the host once, quickly.
            try:
                socket.create_connection((_TFDS_HOST, 443), timeout=10).close()
            except OSError as e:
                raise fail(f"{_TFDS_HOST} unreachable: {e}") from e
            builder.download_and_prepare()
        ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    except RecordsError:
        raise
    except Exception as e:  # noqa: BLE001 - download failures surface as many error types
        raise fail(f"{type(e).__name__}: {str(e)[:300]}") from e
    out = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        label = int(ex["label"])
        data = bytes(ex["image"])
        out.append(Candidate(f"{'cat' if label == 0 else 'dog'}.tfds{i}", label,
                             f"tfds:cats_vs_dogs/{ex['image/filename'].decode()}", lambda d=data: d))
    return out, []
