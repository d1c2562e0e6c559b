"""Where photos come from: Kaggle-layout folders, zips of them, or TFDS's `cats_vs_dogs`.

Discovery only lists files and what their names mean (catdog_tf.data.kaggle); reading and
checking the bytes is records.py's job. Every file found is either a Candidate or a
`skipped` entry with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from catdog_tf.data import kaggle
from catdog_tf.errors import UserError

_TFDS_HOST = "download.microsoft.com"  # where TFDS's cats_vs_dogs zip lives


class RecordsError(UserError):
    """A problem with the input as a whole (not one bad file: those are skipped)."""


@dataclasses.dataclass
class Candidate:
    """One file found in an input, before it is read."""

    id: str
    label: int
    origin: str  # path shown to the user: file path or "archive.zip:member"
    read: Callable[[], bytes]


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


class _ZipReader:
    """Reads members of one zip; one ZipFile handle per thread (ZipFile is not thread-safe)."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()

    def member(self, name: str) -> Callable[[], bytes]:
        def read() -> bytes:
            zf = getattr(self._local, "zf", None)
            if zf is None:
                zf = self._local.zf = zipfile.ZipFile(self.path)
            return zf.read(name)

        return read


def _classify_group(names: list[tuple[str, str, Callable[[], bytes]]], skipped: list[dict]) -> list[Candidate]:
    """names: (basename, origin, reader) of one directory. A directory holding any
    cat./dog. file is labeled; otherwise it is an unlabeled test folder of N.jpg."""
    labeled = any(kaggle.is_labeled_name(n) for n, _, _ in names)
    out = []
    for name, origin, reader in sorted(names, key=lambda t: t[0]):
        kn = kaggle.parse(name)
        if kn is None or kn.labeled != labeled:
            skipped.append({"file": origin, "reason": kaggle.name_problem(name, labeled)})
            continue
        out.append(Candidate(kn.id, kn.label, origin, reader))
    return out


def _discover_dir(root: Path, skipped: list[dict]) -> list[Candidate]:
    subdirs = [root / s for s in ("train", "test") if (root / s).is_dir()]
    if subdirs:  # a Kaggle root holding train/ and test/
        return [c for d in subdirs for c in _discover_dir(d, skipped)]
    names = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue  # .DS_Store and friends are not data
        if entry.is_dir(follow_symlinks=False):
            skipped.append({"file": entry.path, "reason": "directory inside an image folder (not searched)"})
            continue
        names.append((entry.name, entry.path, _file_reader(Path(entry.path))))
    return _classify_group(names, skipped)


def _discover_zip(path: Path, skipped: list[dict]) -> list[Candidate]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise RecordsError(f"{path}: not a readable zip archive ({e})") from e
    reader = _ZipReader(path)
    groups: dict[str, list] = {}
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parent, _, base = info.filename.rpartition("/")
            if base.startswith(".") or "__MACOSX" in parent:
                continue
            groups.setdefault(parent, []).append((base, f"{path}:{info.filename}", reader.member(info.filename)))
    return [c for parent in sorted(groups) for c in _classify_group(groups[parent], skipped)]


def discover(inputs: Iterable[str]) -> tuple[list[Candidate], list[dict]]:
    """Finds the image files of every input; returns (candidates, skipped)."""
    candidates: list[Candidate] = []
    skipped: list[dict] = []
    for inp in inputs:
        path = Path(inp)
        if path.is_dir():
            found = _discover_dir(path, skipped)
        elif path.is_file() and zipfile.is_zipfile(path):
            found = _discover_zip(path, skipped)
        elif path.exists():
            raise RecordsError(f"{path}: --input must be a folder or a .zip archive")
        else:
            raise RecordsError(f"{path}: --input does not exist")
        if not found:
            print(f"warning: {path}: no cat.N.jpg / dog.N.jpg / N.jpg files found", file=sys.stderr)
        candidates.extend(found)
    # The same id twice (e.g. two inputs overlapping): keep the first, report the rest.
    first: dict[str, str] = {}
    unique = []
    for c in candidates:
        if c.id in first:
            skipped.append({"file": c.origin, "reason": f"duplicate id {c.id} (first seen in {first[c.id]})"})
        else:
            first[c.id] = c.origin
            unique.append(c)
    return unique, skipped




def tfds_candidates(data_dir: str | None = None) -> tuple[list[Candidate], list[dict]]:
    """TFDS's public `cats_vs_dogs` (PetImages, 23,262 photos) for online users with no
    Kaggle folder. Ids are made Kaggle-like: cat.tfds<N> / dog.tfds<N>."""
    import tensorflow_datasets as tfds

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
