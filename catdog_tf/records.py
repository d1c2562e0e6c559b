"""Kaggle-layout folders (or zips) -> sharded TFRecords + manifest.json.

    python -m catdog_tf.records --input=../shared/data/kaggle200 --out=records

Every file found is either written or reported in the manifest's `skipped` list with
the reason, so `seen == written + len(skipped)` always holds. Original JPEG bytes are
kept; only files a decoder could not read as-is (CMYK, PNG/GIF content, EXIF rotation)
or files larger than `max_side` are re-encoded.

Feature spec of one tf.train.Example (see FEATURES):
    image/encoded  bytes   JPEG bytes
    image/id       bytes   "cat.123", "dog.7" or "42" (test)
    image/label    int64   0 cat, 1 dog, -1 unlabeled
    image/height   int64   height of the stored JPEG
    image/width    int64
    image/fold     int64   cross-validation fold, -1 when not in fold mode
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from PIL import Image, ImageOps, UnidentifiedImageError

LABELS = {"cat": 0, "dog": 1}
UNLABELED = -1
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord"
DEFAULT_MAX_PIXELS = 50_000_000  # ~7000x7000; anything larger is almost surely not a pet photo
_LABELED_NAME = re.compile(r"^(cat|dog)\.(\d+)\.jpe?g$", re.IGNORECASE)
_TFDS_HOST = "download.microsoft.com"  # where TFDS's cats_vs_dogs zip lives
_TEST_NAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


class RecordsError(RuntimeError):
    """A problem with the input as a whole (not one bad file: those are skipped)."""


@dataclasses.dataclass
class Candidate:
    """One file found in an input, before it is read."""

    id: str
    label: int
    origin: str  # path shown to the user: file path or "archive.zip:member"
    read: Callable[[], bytes]


@dataclasses.dataclass
class Checked:
    """A file that decoded; `convert` says why it must be re-encoded (None: keep bytes)."""

    id: str
    label: int
    origin: str
    read: Callable[[], bytes]
    height: int
    width: int
    convert: str | None = None


@dataclasses.dataclass
class BuildConfig:
    out: str = "records"
    val_fraction: float = 0.1
    folds: int = 0
    seed: int = 0
    exclude: str | None = None
    max_side: int | None = None
    strict: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_mb: float = 100.0
    min_shards: int = 8
    workers: int = 0  # 0: one per core
    jpeg_quality: int = 95


# ---------------------------------------------------------------------------- discovery


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
    labeled = any(_LABELED_NAME.match(n) for n, _, _ in names)
    out = []
    for name, origin, reader in sorted(names, key=lambda t: t[0]):
        if labeled:
            m = _LABELED_NAME.match(name)
            if not m:
                skipped.append({"file": origin, "reason": "name has no cat./dog. prefix (expected cat.N.jpg or dog.N.jpg) in a labeled folder"})
                continue
            out.append(Candidate(f"{m.group(1).lower()}.{int(m.group(2))}", LABELS[m.group(1).lower()], origin, reader))
        else:
            m = _TEST_NAME.match(name)
            if not m:
                skipped.append({"file": origin, "reason": "name is not N.jpg in an unlabeled (test) folder"})
                continue
            out.append(Candidate(str(int(m.group(1))), UNLABELED, origin, reader))
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


# ---------------------------------------------------------------------------- checking


def check(c: Candidate, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> Checked | dict:
    """Decodes one file fully; returns Checked, or a skipped-entry dict with the reason."""
    try:
        data = c.read()
    except OSError as e:
        return {"file": c.origin, "reason": f"cannot read file: {e.strerror or e}"}
    if not data:
        return {"file": c.origin, "reason": "empty file (0 bytes)"}
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return {"file": c.origin, "reason": "not an image (no known image format)"}
    except Image.DecompressionBombError as e:
        return {"file": c.origin, "reason": f"image too large: {e}"}
    except Exception as e:  # noqa: BLE001 - PIL raises many types for garbage headers
        return {"file": c.origin, "reason": f"not a readable image: {e}"}
    w, h = im.size
    if w * h > max_pixels:
        return {"file": c.origin, "reason": f"image too large: {w}x{h} pixels exceeds the {max_pixels} pixel limit"}
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        return {"file": c.origin, "reason": f"truncated or corrupt image data: {e}"}
    convert = None
    if im.format != "JPEG":
        convert = f"{im.format} content re-encoded as JPEG"
    elif im.mode not in ("RGB", "L"):
        convert = f"{im.mode} JPEG converted to RGB"
    elif im.getexif().get(0x0112, 1) != 1:
        convert = "EXIF orientation applied"
    if max_side and max(w, h) > max_side:
        convert = (convert + "; " if convert else "") + f"downscaled to max side {max_side}"
        s = max_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if convert and "EXIF" in convert and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
        w, h = h, w
    return Checked(c.id, c.label, c.origin, c.read, h, w, convert)


def to_jpeg(data: bytes, max_side: int | None = None, quality: int = 95) -> bytes:
    """Re-encodes any decodable image as a baseline RGB JPEG the way a browser shows it."""
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))  # browsers show transparency on white
        bg.paste(im, mask=im.getchannel("A"))
        im = bg
    else:
        im = im.convert("RGB")
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------- splitting


def read_exclusions(path: str) -> set[str]:
    """One id per line (cat.123, dog.7 or 42; a trailing .jpg is allowed); # starts a comment."""
    ids = set()
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise RecordsError(f"{path}: cannot read exclusion file ({e.strerror or e})") from e
    for line in text.splitlines():
        token = line.split("#", 1)[0].strip()
        if token:
            token = re.sub(r"\.jpe?g$", "", token, flags=re.IGNORECASE)
            ids.add(token.lower())
    return ids


def _rank_key(seed: int, id_: str) -> str:
    # A per-id hash rather than a global shuffle: an id keeps its split when other
    # files are added or excluded.
    return hashlib.sha256(f"{seed}:{id_}".encode()).hexdigest()


def assign_splits(items: list, val_fraction: float, folds: int, seed: int) -> dict[str, list]:
    """Stratified by class. Returns split name -> items in a seeded random order.
    folds == 0: train / validation (+ test); folds == K: fold0..fold{K-1} (+ test)."""
    if folds == 1 or folds < 0:
        raise RecordsError("--folds must be 0 (train/validation split) or at least 2")
    if not folds and not 0.0 <= val_fraction < 1.0:
        raise RecordsError("--val_fraction must be in [0, 1)")
    splits: dict[str, list] = {}
    for label in (0, 1):
        ranked = sorted((it for it in items if it.label == label), key=lambda it: _rank_key(seed, it.id))
        if folds:
            for r, it in enumerate(ranked):
                splits.setdefault(f"fold{r % folds}", []).append(it)
        else:
            n_val = round(len(ranked) * val_fraction)
            splits.setdefault("validation", []).extend(ranked[:n_val])
            splits.setdefault("train", []).extend(ranked[n_val:])
    test = [it for it in items if it.label == UNLABELED]
    if test:
        splits["test"] = test
    # Mix the classes within each split so any shard holds both.
    return {name: sorted(v, key=lambda it: _rank_key(seed + 1, it.id)) for name, v in splits.items() if v}


def fold_of(split: str) -> int:
    return int(split[4:]) if split.startswith("fold") else -1


# ---------------------------------------------------------------------------- writing


def _example(it: Checked, data: bytes, fold: int):
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(data),
        "image/id": b(it.id.encode()),
        "image/label": i(it.label),
        "image/height": i(it.height),
        "image/width": i(it.width),
        "image/fold": i(fold),
    })).SerializeToString()


def _shard_fingerprint(items: list[Checked], cfg: BuildConfig, fold: int) -> str:
    h = hashlib.sha256(json.dumps([cfg.max_side, cfg.jpeg_quality, fold]).encode())
    for it in items:
        h.update(f"{it.id}|{it.origin}|{it.height}|{it.width}|{it.convert}\n".encode())
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_shard(path: Path, items: list[Checked], cfg: BuildConfig, fold: int, fingerprint: str) -> dict:
    import tensorflow as tf

    marker = path.parent / ".done" / (path.name + ".json")
    if path.exists() and marker.exists():
        done = json.loads(marker.read_text())
        if done.get("fingerprint") == fingerprint and done.get("bytes") == path.stat().st_size:
            return {**done, "reused": True}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with tf.io.TFRecordWriter(str(tmp)) as w:
        for it in items:
            data = it.read()
            if it.convert:
                data = to_jpeg(data, cfg.max_side, cfg.jpeg_quality)
            w.write(_example(it, data, fold))
    os.replace(tmp, path)  # atomic: a reader never sees half a shard
    done = {"file": path.name, "count": len(items), "bytes": path.stat().st_size,
            "sha256": _sha256_file(path), "fingerprint": fingerprint}
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps(done))
    return {**done, "reused": False}


def _num_shards(items: list[Checked], cfg: BuildConfig) -> int:
    # TF's guidance: shards of tens to hundreds of MB, and enough of them to feed many
    # parallel readers; for small splits the second rule wins (>= 256 images a shard).
    est_bytes = len(items) * 40_000 if cfg.max_side else sum(it.height * it.width for it in items) * 0.3
    by_size = math.ceil(est_bytes / (cfg.shard_mb * 1e6))
    return max(1, by_size, min(cfg.min_shards, math.ceil(len(items) / 256)))


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr,
                disable=total == 0, mininterval=1.0)


def build(inputs: list[str] | None, cfg: BuildConfig) -> dict:
    """Builds shards and OUT/manifest.json; returns the manifest."""
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or os.cpu_count() or 1
    if inputs:
        candidates, skipped = discover(inputs)
        source = [str(Path(i).resolve()) for i in inputs]
    else:
        candidates, skipped = tfds_candidates()
        source = ["tfds:cats_vs_dogs"]
    seen = len(candidates) + len(skipped)

    excluded: list[str] = []
    if cfg.exclude:
        ex_ids = read_exclusions(cfg.exclude)
        kept = []
        for c in candidates:
            if c.id.lower() in ex_ids and c.label != UNLABELED:
                excluded.append(c.id)
                skipped.append({"file": c.origin, "reason": f"excluded by {cfg.exclude}"})
            else:
                kept.append(c)
        unmatched = sorted(ex_ids - {e.lower() for e in excluded})
        candidates = kept
    else:
        unmatched = []

    checked: list[Checked] = []
    bar = _progress(len(candidates), "checking")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for res in pool.map(lambda c: check(c, cfg.max_pixels, cfg.max_side), candidates):
            bar.update()
            if isinstance(res, Checked):
                checked.append(res)
            else:
                skipped.append(res)
                bar.write(f"skip {res['file']}: {res['reason']}", file=sys.stderr)
    bar.close()

    splits = assign_splits(checked, cfg.val_fraction, cfg.folds, cfg.seed)
    jobs = []
    for split, items in splits.items():
        n = _num_shards(items, cfg)
        for k in range(n):
            part = items[k::n]
            fold = fold_of(split)
            jobs.append((split, out / f"{split}-{k:05d}-of-{n:05d}{SHARD_SUFFIX}", part, fold,
                         _shard_fingerprint(part, cfg, fold)))
    expected = {j[1].name for j in jobs}
    for partial in out.glob(f".*{SHARD_SUFFIX}.tmp-*"):  # a killed build's unfinished shards
        partial.unlink()
    for stale in out.glob(f"*{SHARD_SUFFIX}"):  # shards of an earlier, different build
        if stale.name not in expected:
            stale.unlink()
            (out / ".done" / (stale.name + ".json")).unlink(missing_ok=True)

    results: dict[str, dict] = {}
    bar = _progress(sum(len(j[2]) for j in jobs), "writing")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futs = {pool.submit(_write_shard, path, part, cfg, fold, fp): (split, path, part)
                for split, path, part, fold, fp in jobs}
        for fut in concurrent.futures.as_completed(futs):
            split, path, part = futs[fut]
            results[path.name] = fut.result()
            bar.update(len(part))
    bar.close()

    manifest = {
        "format": "catdog_tf.records/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source,
        "seen": seen,
        "written": len(checked),
        "skipped": skipped,
        "excluded": sorted(excluded),
        "exclude_file": cfg.exclude,
        "exclude_unmatched": unmatched,
        "converted": [{"file": it.origin, "id": it.id, "reason": it.convert} for it in checked if it.convert],
        "seed": cfg.seed,
        "val_fraction": None if cfg.folds else cfg.val_fraction,
        "folds": cfg.folds,
        "max_side": cfg.max_side,
        "splits": {},
    }
    for split, items in splits.items():
        shards = sorted((j for j in jobs if j[0] == split), key=lambda j: j[1].name)
        manifest["splits"][split] = {
            "count": len(items),
            "cat": sum(it.label == 0 for it in items),
            "dog": sum(it.label == 1 for it in items),
            "unlabeled": sum(it.label == UNLABELED for it in items),
            "fold": fold_of(split),
            "shards": [{k: results[j[1].name][k] for k in ("file", "count", "bytes", "sha256")} for j in shards],
        }
    assert manifest["seen"] == manifest["written"] + len(skipped), "count reconciliation failed"
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    reused = sum(r["reused"] for r in results.values())
    dt = time.time() - t0
    print(f"records: seen {seen}, written {len(checked)}, skipped {len(skipped)}"
          f" ({len(excluded)} excluded), {len(jobs)} shards ({reused} reused) in {dt:.1f}s"
          f" ({len(checked) / max(dt, 1e-9):.0f} img/s) -> {out / MANIFEST}", file=sys.stderr)
    for split, s in manifest["splits"].items():
        print(f"  {split:<11} {s['count']:>6} images  cat {s['cat']:>6}  dog {s['dog']:>6}"
              f"  {len(s['shards'])} shards", file=sys.stderr)
    return manifest


# ---------------------------------------------------------------------------- TFDS source


def tfds_candidates(data_dir: str | None = None) -> tuple[list[Candidate], list[dict]]:
    """TFDS's public `cats_vs_dogs` (PetImages, 23,262 photos) for online users with no
    Kaggle folder. Ids are made Kaggle-like: cat.tfds<N> / dog.tfds<N>."""
    import socket

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


# ---------------------------------------------------------------------------- reading back


def load_manifest(records_dir: str) -> dict:
    path = Path(records_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordsError(f"{path}: no manifest; build records first: python -m catdog_tf.records "
                           f"--input=FOLDER --out={records_dir}") from None


def shard_files(records_dir: str, split: str, fold: int | None = None) -> list[str]:
    """Shard paths of a split. With folds: split 'train' = every fold but `fold`,
    'validation' = fold `fold`. Several splits join with '+', e.g. 'fold2+fold3'."""
    m = load_manifest(records_dir)
    splits = m["splits"]
    if "+" in split:
        names = split.split("+")
    elif m.get("folds"):
        if split in ("train", "validation"):
            if fold is None:
                raise RecordsError(f"{records_dir} holds {m['folds']} folds: pass fold=0..{m['folds'] - 1}")
            names = [f"fold{fold}"] if split == "validation" else [s for s in splits if s.startswith("fold") and s != f"fold{fold}"]
        else:
            names = [split]
    else:
        names = [split]
    missing = [n for n in names if n not in splits]
    if missing:
        raise RecordsError(f"{records_dir}: no split {missing[0]!r} (have {sorted(splits)})")
    return [str(Path(records_dir) / sh["file"]) for n in names for sh in splits[n]["shards"]]


def read_examples(records_dir: str, split: str | None = None) -> Iterable[dict]:
    """Every example as a dict of Python values (for tools and tests, not training)."""
    import tensorflow as tf

    m = load_manifest(records_dir)
    names = [split] if split else sorted(m["splits"])
    files = [str(Path(records_dir) / sh["file"]) for n in names for sh in m["splits"][n]["shards"]]
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.train.Example.FromString(raw.numpy()).features.feature
        yield {
            "id": ex["image/id"].bytes_list.value[0].decode(),
            "label": ex["image/label"].int64_list.value[0],
            "height": ex["image/height"].int64_list.value[0],
            "width": ex["image/width"].int64_list.value[0],
            "fold": ex["image/fold"].int64_list.value[0],
            "encoded": ex["image/encoded"].bytes_list.value[0],
        }


# ---------------------------------------------------------------------------- CLI


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    cfg = BuildConfig(out=F.out, val_fraction=F.val_fraction, folds=F.folds, seed=F.seed,
                      exclude=F.exclude, max_side=F.max_side, strict=F.strict, max_pixels=F.max_pixels,
                      shard_mb=F.shard_mb, workers=F.workers)
    try:
        manifest = build(F.input, cfg)
    except RecordsError as e:
        raise SystemExit(f"error: {e}")
    if cfg.strict and manifest["skipped"]:
        raise SystemExit(f"error: --strict and {len(manifest['skipped'])} file(s) skipped (see {cfg.out}/{MANIFEST})")


def _define_flags():
    from absl import flags

    flags.DEFINE_multi_string("input", None, "Kaggle-layout folder (train/, test/, or a folder of "
                              "cat.N.jpg/dog.N.jpg or N.jpg) or a zip of one. Repeatable. None: TFDS cats_vs_dogs.")
    flags.DEFINE_string("out", "records", "Output folder for shards and manifest.json.")
    flags.DEFINE_float("val_fraction", 0.1, "Fraction of each class held out for validation.")
    flags.DEFINE_integer("folds", 0, "K >= 2: assign every labeled image to one of K folds instead.")
    flags.DEFINE_integer("seed", 0, "Split seed.")
    flags.DEFINE_string("exclude", None, "File of ids to leave out of train/validation (one per line, # comments).")
    flags.DEFINE_integer("max_side", None, "Store a re-encoding downscaled to this longest side.")
    flags.DEFINE_bool("strict", False, "Exit non-zero if any file was skipped.")
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Skip images with more pixels than this.")
    flags.DEFINE_float("shard_mb", 100.0, "Target shard size in MB.")
    flags.DEFINE_integer("workers", 0, "Reader/writer threads (0: one per core).")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
