"""Reading a records folder back: its manifest (checked against its schema), the shards of a
split (each checked against the manifest), counts, exclusions and the examples themselves.

The builder (records.py) writes what this module reads; trainers, predictors and tools read a
folder only through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Iterable

import tensorflow as tf

from catdog_tf import files
from catdog_tf.data import kaggle, schema
from catdog_tf.data.sources import RecordsError
from catdog_tf.files import sha256_file

MANIFEST = "manifest.json"


def load_manifest(records_dir: str) -> dict:
    """The manifest of a records folder, checked against its schema (manifest_problem): a
    damaged or foreign one is a RecordsError naming it."""
    path = files.join(records_dir, MANIFEST)
    if not files.exists(path):
        raise RecordsError(f"{path}: no manifest; build records first: python -m catdog_tf.records "
                           f"--input=FOLDER --out={records_dir}")
    m = files.read_json(path, "records manifest")
    why = manifest_problem(m)
    if why:
        raise RecordsError(f"{path}: not a valid records manifest ({why}); rebuild the records")
    return m


def _plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and name not in (".", "..") and "/" not in name and \
        "\\" not in name and "://" not in name


def manifest_problem(m) -> str | None:
    """What makes `m` not a manifest this package wrote (None: nothing). Shards must be plain
    file names inside the folder: a manifest never sends a reader elsewhere."""
    if not isinstance(m, dict) or not isinstance(m.get("splits"), dict):
        return "no 'splits' object"
    for key in ("excluded",):
        if not isinstance(m.get(key, []), list) or not all(isinstance(i, str) for i in m.get(key, [])):
            return f"'{key}' is not a list of ids"
    if not isinstance(m.get("skipped", []), list) or not all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                                           for e in m.get("skipped", [])):
        return "'skipped' is not a list of {file, reason}"
    for key in ("folds", "store_size", "max_side"):
        if m.get(key) is not None and not _count(m[key]):
            return f"'{key}' is not a number"
    for name, split in m["splits"].items():
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
            return f"split {name!r} has no shard list"
        for key in ("count", "cat", "dog", "unlabeled", "excluded"):
            if (key == "count" or key in split) and not _count(split.get(key)):
                return f"split {name!r}: {key} is not a number of photos"
        for sh in split["shards"]:
            if not isinstance(sh, dict) or not _plain_name(sh.get("file")):
                return f"split {name!r}: a shard is not a plain file name in the folder ({sh!r:.80})"
            if not (_count(sh.get("count")) and _count(sh.get("bytes")) and isinstance(sh.get("sha256"), str)):
                return f"shard {sh['file']}: count, bytes or sha256 missing"
        if sum(sh["count"] for sh in split["shards"]) != split["count"]:
            return f"split {name!r}: its shards hold {sum(sh['count'] for sh in split['shards'])} photos, " \
                   f"not its count {split['count']}"
    return None


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def lost_ids(records_dir: str, labeled: bool) -> list[str]:
    """Ids the build found by name (test photos, or labeled ones) but skipped: unreadable photos.
    A submission still owes each test id a row, so predict counts them."""
    out = []
    for s in load_manifest(records_dir).get("skipped", []):
        kn = kaggle.parse(files.name(s["file"].rpartition(":")[2]))
        if kn is not None and kn.labeled == labeled:
            out.append(kn.id)
    return sorted(set(out), key=kaggle.number_order)


def _checked_shards(records_dir: str, m: dict, names: list[str]) -> list[str]:
    """The shard paths of splits `names`, each checked against the manifest: a missing or
    changed shard is an error, never another data set read silently."""
    paths = []
    for n in names:
        for sh in m["splits"][n]["shards"]:
            path = files.join(records_dir, sh["file"])
            try:
                size = files.size(path)
            except tf.errors.NotFoundError:
                raise RecordsError(f"{path}: listed in {files.join(records_dir, MANIFEST)} but missing; rebuild the "
                                   "records") from None
            if size != sh["bytes"]:
                raise RecordsError(f"{path}: {size} bytes where the manifest says {sh['bytes']}: the folder "
                                   "changed after its build; rebuild the records")
            paths.append(path)
    return paths


def _split_names(records_dir: str, m: dict, split: str, fold: int | None) -> list[str]:
    """With folds: split 'train' = every fold but `fold`, 'validation' = fold `fold`.
    Several splits join with '+', e.g. 'fold2+fold3'."""
    splits = m["splits"]
    if fold is not None and not m.get("folds"):
        raise RecordsError(f"{records_dir} was built without --folds, so there is no fold {fold}")
    if "+" in split:
        names = split.split("+")
    elif m.get("folds") and split in ("train", "validation"):
        if fold is None:
            raise RecordsError(f"{records_dir} holds {m['folds']} folds: pass fold=0..{m['folds'] - 1}")
        names = [f"fold{fold}"] if split == "validation" else [s for s in splits if s.startswith("fold") and s != f"fold{fold}"]
    else:
        names = [split]
    if len(set(names)) != len(names):
        raise RecordsError(f"split {split!r} names a split twice: its photos would count twice")
    missing = [n for n in names if n not in splits]
    if missing:
        raise RecordsError(f"{records_dir}: no split {missing[0]!r} (have {sorted(splits)})")
    return names


def all_shard_files(records_dir: str) -> list[str]:
    """Every shard the manifest lists (all splits), sorted, each checked against the manifest."""
    m = load_manifest(records_dir)
    return sorted(_checked_shards(records_dir, m, sorted(m["splits"])))


def split_names(records_dir: str, split: str, fold: int | None = None) -> list[str]:
    """The manifest splits that `split` (with `fold`) reads, e.g. 'train' with fold 3 -> every other fold."""
    return _split_names(records_dir, load_manifest(records_dir), split, fold)


def stored_size(records_dir: str) -> int | None:
    """S when the build stored every photo at S x S (--store_size), else None."""
    return load_manifest(records_dir).get("store_size")


def shard_files(records_dir: str, split: str, fold: int | None = None) -> list[str]:
    """Shard paths of a split (see _split_names), each checked against the manifest."""
    m = load_manifest(records_dir)
    return _checked_shards(records_dir, m, _split_names(records_dir, m, split, fold))


def split_shards(records_dir: str, split: str, fold: int | None = None) -> list[dict]:
    """The manifest entries (file, count, bytes, sha256) of a split's shards."""
    m = load_manifest(records_dir)
    names = {files.name(f) for f in shard_files(records_dir, split, fold)}
    return [sh for s in m["splits"].values() for sh in s["shards"] if sh["file"] in names]


def split_count(records_dir: str, split: str, fold: int | None = None, *, training: bool = False) -> int:
    """Photos in a split; training=True leaves out the excluded ones (excluded_ids)."""
    m = load_manifest(records_dir)
    shard_files(records_dir, split, fold)  # the same checks as a reader
    parts = [m["splits"][n] for n in _split_names(records_dir, m, split, fold)]
    return sum(p["count"] - (p.get("excluded", 0) if training else 0) for p in parts)


def require_labeled(records_dir: str, split: str, fold: int | None = None, use: str = "scoring") -> None:
    """A split that figures or fits are computed on must hold labeled photos only (a test split
    holds none): a RecordsError otherwise, before any work."""
    m = load_manifest(records_dir)
    names = _split_names(records_dir, m, split, fold)
    _checked_shards(records_dir, m, names)
    unlabeled = sum(m["splits"][n].get("unlabeled", 0) for n in names)
    if unlabeled:
        raise RecordsError(f"{records_dir}: split {split!r} holds {unlabeled} unlabeled photo(s) (a test split): "
                           f"{use} needs labeled photos (cat.N / dog.N)")


def content_fingerprint(records_dir: str) -> str:
    """What a trainer's result depends on: every shard's checksum and the exclusion list (not
    the build time), so an unchanged rebuild keeps finished runs finished."""
    m = load_manifest(records_dir)
    shards = sorted(sh["sha256"] for s in m["splits"].values() for sh in s["shards"])
    return hashlib.sha256(json.dumps([shards, sorted(m.get("excluded", []))]).encode()).hexdigest()[:16]


def excluded_ids(records_dir: str) -> list[str]:
    """Photos stored for evaluation but kept out of training (the build's --exclude list)."""
    return list(load_manifest(records_dir).get("excluded", []))


@contextlib.contextmanager
def damage_named(records_dir: str):
    """Reading a records folder: a shard damaged after its build (TFRecord's checksums fail) is
    named by comparing every shard with the manifest's sha256, as one RecordsError."""
    try:
        yield
    except tf.errors.DataLossError as e:
        m = load_manifest(records_dir)
        for split in m["splits"].values():
            for sh in split["shards"]:
                path = files.join(records_dir, sh["file"])
                if files.exists(path) and sha256_file(path) != sh["sha256"]:
                    raise RecordsError(f"{path}: damaged (its sha256 differs from the manifest's); rebuild the "
                                       "records") from None
        raise RecordsError(f"{records_dir}: a shard cannot be read ({e.message.strip().splitlines()[0]}); rebuild "
                           "the records") from None


def read_examples(records_dir: str, split: str | None = None) -> Iterable[dict]:
    """Every example as a dict of Python values (schema.to_python), for tools and tests."""
    m = load_manifest(records_dir)
    names = [split] if split else sorted(m["splits"])
    files = _checked_shards(records_dir, m, names)
    with damage_named(records_dir):
        for raw in tf.data.TFRecordDataset(files):
            yield schema.to_python(raw.numpy())


