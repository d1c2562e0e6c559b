"""Data exploration for Kaggle-layout cat/dog folders (or TFRecord shards).

    python -m catdog_tf.explore --images=../shared/data/kaggle_native/train --out=reports/explore

What it reports (see `explore_folder` / `explore_records` for the notebook API):

* counts per class: ``cat.N.jpg`` -> cat, ``dog.N.jpg`` -> dog, ``N.jpg`` -> unlabeled,
  anything else -> other (for TFRecords the ``image/label`` feature decides);
* image size statistics (width, height, aspect = width / height, megapixels, file bytes)
  per class, a width/height scatter plot per class with the extreme ids named, and
  file-size and aspect-ratio histograms;
* exact duplicates (same sha256 of the file bytes) and near-duplicates (64-bit perceptual
  hash, Hamming distance <= threshold), as groups of ids; groups whose members carry both
  the cat and the dog label are flagged ``label_conflict``;
* undecodable files (empty, not an image, truncated, other decode errors) with the reason.
  Reading never raises on bad input: every error becomes a row of ``undecodable``.

Output folder: ``index.html`` (tables, plots, inline thumbnails of duplicate groups),
``summary.json`` (machine-readable) and the PNG plots.

Speed: one task per file, in chunks over a process pool (`--workers`). A task reads the
file once, hashes the bytes, reads the size from the header and decodes the JPEG through
`Image.draft` (libjpeg DCT scaling, 1/2..1/8 of the size, grayscale) for the perceptual
hash; the draft decode still walks the whole entropy-coded stream, so truncated files are
caught. Processes, not threads: with 200x200 JPEGs the GIL-bound part of a task is as long
as the decode, and 2 threads measured no faster than 1.

Perceptual hash: the standard pHash (as in the `imagehash` package: grayscale, 32x32
Lanczos resize, 2-D DCT-II, the 8x8 lowest frequencies against their median -> 64 bits),
written in numpy (a 8x32 cosine matrix) instead of depending on `imagehash`; see
`phash` for the reasoning.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import dataclasses
import hashlib
import html
import io
import itertools
import json
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

CLASSES = ("cat", "dog", "unlabeled", "other")
LABEL_TO_CLASS = {0: "cat", 1: "dog", -1: "unlabeled"}
KAGGLE_SPLITS = ("train", "test", "test1")  # sub-folders scanned when given a Kaggle root
# pHash distances are even (32 bits above the median each). On kaggle200/train every pair at
# distance <= 4 was the same photo re-saved, every pair at 8 or 10 looked at was two different
# photos (counts by distance 0..12: 12, 0, 4, 0, 1, 0, 0, 0, 6, 0, 84, 0, 750).
DEFAULT_NEAR_DUP_THRESHOLD = 6
HASH_SIZE = 8  # 8x8 DCT coefficients -> 64-bit hash
_HASH_IMG = 32  # pHash input size (4 x HASH_SIZE, as imagehash's highfreq_factor=4)

_NAME_RE = re.compile(r"^(?:(cat|dog)\.)?(\d+)\.[A-Za-z0-9]+$", re.IGNORECASE)


# --------------------------------------------------------------------------- data types


@dataclasses.dataclass
class ImageInfo:
    """What one pass learns about one image (a file or a TFRecord example)."""

    id: str  # "cat.123", "123" (prefixed with "train/" etc. when several sources)
    label: str  # one of CLASSES
    source: str  # folder or shard it came from
    path: str | None = None  # file path (None for TFRecords)
    record: tuple[str, int] | None = None  # (shard path, index in shard) for TFRecords
    nbytes: int = 0
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    phash: int | None = None
    error: str | None = None  # None when the image decoded
    error_kind: str | None = None  # empty / not_an_image / truncated / decode_error / ...
    warning: str | None = None  # decoded, but something is off (TFRecord size != decoded size)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class ExploreResult:
    """Everything `explore_folder` / `explore_records` found; `summary()` is the JSON."""

    sources: list[str]
    items: list[ImageInfo]
    counts: dict[str, int]
    counts_by_source: dict[str, dict[str, int]]
    stats: dict[str, dict[str, dict[str, float]]]
    duplicates: list[dict[str, Any]]
    near_duplicates: list[dict[str, Any]]
    undecodable: list[dict[str, Any]]
    extremes: dict[str, list[dict[str, Any]]]
    params: dict[str, Any]
    seconds: float
    files_per_s: float

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary written to summary.json."""
        return {
            "sources": self.sources,
            "n_files": len(self.items),
            "n_decoded": sum(it.ok for it in self.items),
            "counts": self.counts,
            "counts_by_source": self.counts_by_source,
            "stats": self.stats,
            "extremes": self.extremes,
            "duplicates": self.duplicates,
            "near_duplicates": self.near_duplicates,
            "label_conflicts": {
                "duplicates": sum(g["label_conflict"] for g in self.duplicates),
                "near_duplicates": sum(g["label_conflict"] for g in self.near_duplicates),
            },
            "undecodable": self.undecodable,
            "warnings": [{"id": it.id, "warning": it.warning} for it in self.items if it.warning],
            "params": self.params,
            "timing": {"seconds": round(self.seconds, 3), "files_per_s": round(self.files_per_s, 1)},
        }


# --------------------------------------------------------------------------- names


def classify_name(filename: str) -> str:
    """Class of a Kaggle file name: 'cat.1.jpg' -> cat, '7.jpg' -> unlabeled, else other."""
    m = _NAME_RE.match(filename)
    if not m:
        return "other"
    return m.group(1).lower() if m.group(1) else "unlabeled"


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_files(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """Files of a Kaggle-layout folder as (path, id) pairs, naturally sorted.

    A plain folder gives its regular, non-hidden files (all of them: a stray non-image
    file shows up as class "other" and as undecodable). A Kaggle root (a folder with a
    `train/` or `test/` sub-folder) gives the files of those sub-folders, with ids
    prefixed by the sub-folder ("train/cat.1", "test/7").
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    splits = [folder / s for s in KAGGLE_SPLITS if (folder / s).is_dir()]
    if splits:
        out: list[tuple[Path, str]] = []
        for sub in splits:
            out += [(p, f"{sub.name}/{i}") for p, i in list_image_files(sub)]
        return out
    files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    files.sort(key=lambda p: _natural_key(p.name))
    return [(p, _strip_ext(p.name)) for p in files]


def _strip_ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem else name


# --------------------------------------------------------------------------- hashing


def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_DCT = _dct_matrix(HASH_SIZE, _HASH_IMG)  # rows of the (unnormalised) DCT-II


def phash(image: Image.Image) -> int:
    """64-bit perceptual hash (pHash) of a PIL image, as an int (bit 63 = coefficient 0,0).

    Same algorithm and bit order as `imagehash.phash(image)` (hash_size=8): grayscale,
    32x32 Lanczos resize, 2-D DCT-II, 8x8 lowest frequencies compared with their median
    (checked bit for bit against imagehash 4.3.2 on 200 photos of kaggle_native).
    imagehash is installable from PyPI, but it would bring PyWavelets and scipy as
    runtime dependencies for these ~10 lines, and the heavy parts here (draft decoding,
    the all-pairs Hamming search) are ours either way. Callers that want speed pass an
    image already reduced with `Image.draft` (see `analyze_bytes`); a draft-decoded hash
    differs from the full-decode hash by 0-8 bits (mostly 0-2), so compare hashes made
    the same way.
    """
    small = image.convert("L").resize((_HASH_IMG, _HASH_IMG), Image.Resampling.LANCZOS)
    px = np.asarray(small, dtype=np.float64)
    low = (_DCT @ px @ _DCT.T).ravel()  # 8x8 lowest frequencies of the 2-D DCT-II, row-major
    srt = np.sort(low)
    median = 0.5 * (srt[31] + srt[32])  # == np.median(low), 3x faster
    bits = np.packbits(low > median)  # first coefficient = most significant bit
    return int.from_bytes(bits.tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


# --------------------------------------------------------------------------- one image


def analyze_bytes(data: bytes, *, with_hash: bool = True) -> dict[str, Any]:
    """Size, format, sha256 and pHash of one encoded image; never raises.

    Returns a dict with keys nbytes, sha256, width, height, format, mode, phash, error,
    error_kind. The size comes from the header; the pixels are decoded once, at a
    reduced scale through `Image.draft` (JPEG), which also proves the file decodes.
    """
    out: dict[str, Any] = {
        "nbytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": None,
        "height": None,
        "format": None,
        "mode": None,
        "phash": None,
        "error": None,
        "error_kind": None,
    }
    if not data:
        out.update(error="empty file (0 bytes)", error_kind="empty")
        return out
    try:
        with Image.open(io.BytesIO(data)) as img:
            out.update(width=img.width, height=img.height, format=img.format, mode=img.mode)
            if img.format == "JPEG":
                img.draft("L", (_HASH_IMG, _HASH_IMG))
            img.load()  # decodes the whole stream (at draft scale): truncation raises here
            if with_hash:
                out["phash"] = phash(img)
    except UnidentifiedImageError:
        out.update(error="not an image (PIL cannot identify it)", error_kind="not_an_image")
    except Image.DecompressionBombError as e:
        out.update(error=f"decompression bomb: {e}", error_kind="too_large")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        kind = "truncated" if "truncated" in msg.lower() else "decode_error"
        out.update(error=f"{type(e).__name__}: {msg}", error_kind=kind)
    except Exception as e:  # noqa: BLE001 - bad input must never stop the scan
        out.update(error=f"{type(e).__name__}: {e}", error_kind="decode_error")
    return out


def _analyze_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return {"nbytes": 0, "sha256": "", "error": f"cannot read: {e}", "error_kind": "unreadable"}
    return analyze_bytes(data)


# --------------------------------------------------------------------------- scanning


def _map_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(a) for a in chunk]


def _pool_map(fn: Callable[[Any], Any], args: Iterable[Any], workers: int, total: int | None,
              progress: bool, desc: str, chunk_size: int = 32, start_method: str | None = None) -> list[Any]:
    """Ordered `map(fn, args)` over `workers` processes, with a tqdm bar.

    `fn` must be a module-level function (it is pickled). Inputs go out in chunks of
    `chunk_size`, at most 3 chunks per worker in flight, so a generator input (TFRecords)
    is never held in memory whole. workers=1, or fewer than 256 inputs per worker when
    `total` is known, runs in this process (a spawned worker costs ~0.5 s to start). Processes rather than
    threads: per file, the GIL-holding Python/numpy part is about as long as the decode,
    and threads measured no faster than one thread on 200x200 JPEGs.
    """
    import multiprocessing as mp

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, smoothing=0.05)
    results: list[Any] = []
    workers = max(1, int(workers))
    if workers == 1 or (total is not None and total < 256 * workers):
        for a in args:
            results.append(fn(a))
            bar.update(1)
        bar.close()
        return results
    it = iter(args)
    if start_method is None:
        fork_ok = "fork" in mp.get_all_start_methods() and "tensorflow" not in sys.modules
        start_method = "fork" if fork_ok else "spawn"
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(start_method)) as ex:
        pending: dict[cf.Future, int] = {}
        done_buf: dict[int, list[Any]] = {}
        n_sent = n_out = 0

        def submit_some() -> None:
            nonlocal n_sent
            while len(pending) < 3 * workers:
                chunk = list(itertools.islice(it, chunk_size))
                if not chunk:
                    return
                pending[ex.submit(_map_chunk, fn, chunk)] = n_sent
                n_sent += 1

        submit_some()
        while pending:
            finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                res = fut.result()
                done_buf[pending.pop(fut)] = res
                bar.update(len(res))
            while n_out in done_buf:
                results.extend(done_buf.pop(n_out))
                n_out += 1
            submit_some()
    bar.close()
    return results


def _source_names(folders: Sequence[Path]) -> list[str]:
    """Short, distinct display names for source folders (last 1, 2, ... path parts)."""
    for depth in range(1, 8):
        names = ["/".join(f.resolve().parts[-depth:]) for f in folders]
        if len(set(names)) == len(names):
            return names
    return [str(f) for f in folders]


def scan_images(folders: str | os.PathLike | Sequence[str | os.PathLike], *, workers: int = 2,
                progress: bool = True) -> list[ImageInfo]:
    """Analyze every file of one or more Kaggle-layout folders (see `list_image_files`).

    With several folders, ids are prefixed with a short folder name ("train/cat.1").
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    names = _source_names(folders)
    entries: list[tuple[Path, str, str]] = []
    for folder, name in zip(folders, names):
        for path, id_ in list_image_files(folder):
            full_id = f"{name}/{id_}" if len(folders) > 1 else id_
            entries.append((path, full_id, str(folder)))
    results = _pool_map(_analyze_file, [str(p) for p, _, _ in entries], workers, len(entries),
                        progress, "explore")
    items = []
    for (path, id_, src), r in zip(entries, results):
        items.append(ImageInfo(id=id_, label=classify_name(path.name), source=src, path=str(path), **r))
    return items


def record_shards(folder: str | os.PathLike) -> list[Path]:
    """The `*.tfrecord` shards of a records folder, sorted."""
    shards = sorted(Path(folder).glob("*.tfrecord"))
    if not shards:
        raise FileNotFoundError(f"no *.tfrecord shards in {folder}")
    return shards


def iter_records(folder: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the examples of `catdog_tf.records` shards as plain dicts.

    Keys: id (str), label (int: 0 cat, 1 dog, -1 unlabeled), height, width (declared,
    int), encoded (bytes), shard (str), index (int, position in the shard). A record
    that does not parse yields id "<shard>#<index>" and encoded=b"" with key `error`.
    """
    import tensorflow as tf  # lazy: only the records path pays for the import

    for shard in record_shards(folder):
        ds = tf.data.TFRecordDataset(str(shard))
        for index, raw in enumerate(ds.as_numpy_iterator()):
            rec: dict[str, Any] = {"shard": str(shard), "index": index}
            try:
                f = tf.train.Example.FromString(raw).features.feature
                rec["encoded"] = f["image/encoded"].bytes_list.value[0]
                rec["id"] = f["image/id"].bytes_list.value[0].decode("utf-8", "replace")
                rec["label"] = int(f["image/label"].int64_list.value[0]) if "image/label" in f else -1
                rec["height"] = int(f["image/height"].int64_list.value[0]) if "image/height" in f else None
                rec["width"] = int(f["image/width"].int64_list.value[0]) if "image/width" in f else None
            except Exception as e:  # noqa: BLE001
                rec.update(id=f"{shard.name}#{index}", label=-2, height=None, width=None, encoded=b"",
                           error=f"bad record: {type(e).__name__}: {e}")
            yield rec


def _analyze_record(rec: dict[str, Any]) -> dict[str, Any]:
    r = analyze_bytes(rec["encoded"])
    if rec.get("error"):
        r.update(error=rec["error"], error_kind="bad_record")
    elif r["error"] is None and rec.get("width") is not None and (
            (rec["width"], rec["height"]) != (r["width"], r["height"])):
        r["declared_size_mismatch"] = [rec["width"], rec["height"]]
    return r


def scan_records(folder: str | os.PathLike, *, workers: int = 2, progress: bool = True) -> list[ImageInfo]:
    """Analyze every example of the TFRecord shards in `folder` (see `iter_records`)."""
    shards = record_shards(folder)
    metas: list[dict[str, Any]] = []

    def gen() -> Iterator[dict[str, Any]]:
        for rec in iter_records(folder):
            metas.append({k: rec[k] for k in ("id", "label", "shard", "index", "width", "height")})
            yield rec

    # spawn: the generator imports TensorFlow in this process, after which fork is unsafe.
    results = _pool_map(_analyze_record, gen(), workers, None, progress, f"explore {len(shards)} shards",
                        start_method="spawn")
    items = []
    for m, r in zip(metas, results):
        mismatch = r.pop("declared_size_mismatch", None)
        it = ImageInfo(id=m["id"], label=LABEL_TO_CLASS.get(m["label"], "other"), source=m["shard"],
                       record=(m["shard"], m["index"]), **r)
        if mismatch is not None:
            it.warning = f"declared size {mismatch[0]}x{mismatch[1]} != decoded size {it.width}x{it.height}"
        items.append(it)
    return items


# --------------------------------------------------------------------------- analysis


_PCTS = (("min", 0), ("p1", 1), ("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95),
         ("p99", 99), ("max", 100))


def _describe(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [p for _, p in _PCTS])
    d = {name: round(float(v), 4) for (name, _), v in zip(_PCTS, q)}
    d["mean"] = round(float(values.mean()), 4)
    return d


def count_classes(items: Sequence[ImageInfo]) -> dict[str, int]:
    """Files per class (all files, decodable or not), with every class present and a total."""
    c = Counter(it.label for it in items)
    out = {k: c.get(k, 0) for k in CLASSES}
    out["total"] = len(items)
    return out


def size_stats(items: Sequence[ImageInfo]) -> dict[str, dict[str, dict[str, float]]]:
    """Per class (and "all"): width, height, aspect (w/h), megapixels, kbytes statistics.

    Only decodable images count; `n` is how many. Classes without images are left out.
    """
    groups: dict[str, list[ImageInfo]] = defaultdict(list)
    for it in items:
        if it.ok and it.width and it.height:
            groups[it.label].append(it)
            groups["all"].append(it)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cls in (*CLASSES, "all"):
        g = groups.get(cls)
        if not g:
            continue
        w = np.array([it.width for it in g], dtype=np.float64)
        h = np.array([it.height for it in g], dtype=np.float64)
        kb = np.array([it.nbytes / 1024 for it in g], dtype=np.float64)
        out[cls] = {
            "n": {"count": len(g)},
            "width": _describe(w),
            "height": _describe(h),
            "aspect": _describe(w / h),
            "megapixels": _describe(w * h / 1e6),
            "kbytes": _describe(kb),
        }
    return out


def size_extremes(items: Sequence[ImageInfo]) -> dict[str, list[dict[str, Any]]]:
    """Per class: the smallest / largest (pixels) and widest / tallest (aspect) image ids."""
    groups: dict[str, list[ImageInfo]] = defaultdict(list)
    for it in items:
        if it.ok and it.width and it.height:
            groups[it.label].append(it)
    out: dict[str, list[dict[str, Any]]] = {}
    for cls in CLASSES:
        g = groups.get(cls)
        if not g:
            continue
        picks = [
            ("smallest", min(g, key=lambda it: (it.width * it.height, it.id))),
            ("largest", max(g, key=lambda it: (it.width * it.height, it.id))),
            ("widest", max(g, key=lambda it: (it.width / it.height, it.id))),
            ("tallest", min(g, key=lambda it: (it.width / it.height, it.id))),
        ]
        out[cls] = [{"what": what, "id": it.id, "width": it.width, "height": it.height,
                     "aspect": round(it.width / it.height, 3)} for what, it in picks]
    return out


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _labels_conflict(labels: Iterable[str]) -> bool:
    s = set(labels)
    return "cat" in s and "dog" in s


def find_exact_duplicates(items: Sequence[ImageInfo]) -> list[dict[str, Any]]:
    """Groups of items whose bytes have the same sha256 (empty files excluded).

    Each group: {"sha256", "ids", "labels", "nbytes", "label_conflict"}; groups sorted with
    label conflicts first, then by size (desc) and first id.
    """
    by_hash: dict[str, list[ImageInfo]] = defaultdict(list)
    for it in items:
        if it.nbytes > 0 and it.sha256:
            by_hash[it.sha256].append(it)
    groups = []
    for h, g in by_hash.items():
        if len(g) > 1:
            labels = [it.label for it in g]
            groups.append({"sha256": h, "ids": [it.id for it in g], "labels": labels,
                           "nbytes": g[0].nbytes, "label_conflict": _labels_conflict(labels)})
    groups.sort(key=lambda d: (not d["label_conflict"], -len(d["ids"]), _natural_key(d["ids"][0])))
    return groups


def hash_pairs(hashes: np.ndarray, threshold: int, block: int = 256) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, of 64-bit hashes within `threshold` bits.

    Brute force over blocks with numpy XOR + popcount: 25,000 hashes take about a second.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, n, block):
        rows = h[start:start + block]
        d = np.bitwise_count(rows[:, None] ^ h[None, start:])  # (b, n - start)
        ii, jj = np.nonzero(d <= threshold)
        keep = jj > ii  # columns are offset by `start`, so j > i means a later item
        for i, j in zip(ii[keep], jj[keep]):
            pairs.append((start + int(i), start + int(j), int(d[i, j])))
    return pairs


def find_near_duplicates(items: Sequence[ImageInfo], threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
                         ) -> list[dict[str, Any]]:
    """Groups of images whose pHashes are within `threshold` bits (linked transitively).

    Works on distinct contents: exact duplicates count once, so a group is only reported
    when it holds at least two *different* files; its `ids` still lists every copy.
    Each group: {"ids", "labels", "max_distance", "pairs": [[id_a, id_b, dist], ...],
    "label_conflict"}; sorted like `find_exact_duplicates`.
    """
    reps: dict[str, list[ImageInfo]] = {}
    for it in items:
        if it.ok and it.phash is not None:
            reps.setdefault(it.sha256, []).append(it)
    contents = list(reps.values())
    if len(contents) < 2:
        return []
    hashes = np.array([g[0].phash for g in contents], dtype=np.uint64)
    pairs = hash_pairs(hashes, threshold)
    uf = _UnionFind(len(contents))
    for i, j, _ in pairs:
        uf.union(i, j)
    comp_pairs: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for p in pairs:
        comp_pairs[uf.find(p[0])].append(p)
    groups = []
    for root, ps in comp_pairs.items():
        members = sorted({k for p in ps for k in p[:2]})
        its = [it for k in members for it in contents[k]]
        labels = [it.label for it in its]
        groups.append({
            "ids": [it.id for it in its],
            "labels": labels,
            "max_distance": max(p[2] for p in ps),
            "pairs": [[contents[i][0].id, contents[j][0].id, d] for i, j, d in sorted(ps)],
            "label_conflict": _labels_conflict(labels),
        })
    groups.sort(key=lambda d: (not d["label_conflict"], -len(d["ids"]), _natural_key(d["ids"][0])))
    return groups


def _undecodable(items: Sequence[ImageInfo]) -> list[dict[str, Any]]:
    return [{"id": it.id, "path": it.path if it.path else (f"{it.record[0]}#{it.record[1]}" if it.record else None),
             "label": it.label, "nbytes": it.nbytes, "kind": it.error_kind, "reason": it.error}
            for it in items if it.error is not None]


def analyze(items: list[ImageInfo], *, sources: Sequence[str], near_dup_threshold: int,
            seconds: float, params: dict[str, Any] | None = None) -> ExploreResult:
    """Turn scanned items into an `ExploreResult` (counts, stats, duplicates, ...)."""
    by_source: dict[str, list[ImageInfo]] = defaultdict(list)
    for it in items:
        by_source[it.source].append(it)
    return ExploreResult(
        sources=list(sources),
        items=items,
        counts=count_classes(items),
        counts_by_source={s: count_classes(g) for s, g in by_source.items()} if len(by_source) > 1 else {},
        stats=size_stats(items),
        duplicates=find_exact_duplicates(items),
        near_duplicates=find_near_duplicates(items, near_dup_threshold),
        undecodable=_undecodable(items),
        extremes=size_extremes(items),
        params={"near_dup_threshold": near_dup_threshold, "hash": "phash-64 (8x8 DCT of 32x32 gray)",
                **(params or {})},
        seconds=seconds,
        files_per_s=len(items) / seconds if seconds > 0 else float("nan"),
    )


def explore_folder(folders: str | os.PathLike | Sequence[str | os.PathLike], *,
                   near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD, workers: int = 2,
                   progress: bool = True) -> ExploreResult:
    """Explore one or more Kaggle-layout image folders (or Kaggle roots with train/, test/).

    Timing (`seconds`, `files_per_s`) covers the scan: reading, hashing and decoding.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    t0 = time.perf_counter()
    items = scan_images(folders, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    return analyze(items, sources=[str(f) for f in folders], near_dup_threshold=near_dup_threshold,
                   seconds=seconds, params={"workers": workers, "input": "images"})


def explore_records(folder: str | os.PathLike, *, near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
                    workers: int = 2, progress: bool = True) -> ExploreResult:
    """Explore the TFRecord shards (`FOLDER/*.tfrecord`) written by `catdog_tf.records`."""
    t0 = time.perf_counter()
    items = scan_records(folder, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    return analyze(items, sources=[str(folder)], near_dup_threshold=near_dup_threshold,
                   seconds=seconds, params={"workers": workers, "input": "records"})


# --------------------------------------------------------------------------- report


_CLASS_COLORS = {"cat": "#d95f02", "dog": "#1b9e77", "unlabeled": "#7570b3", "other": "#777777"}


def _separate_boxes(fig: Any, groups: list[list[Any]], lim: float) -> None:
    """Move annotation boxes up or down (nearest free spot first) so that they do not overlap."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()

    def box(ann: Any) -> Any:  # the text box only: Annotation's own extent includes the arrow
        return Text.get_window_extent(ann, renderer).padded(6)

    steps = [0.0] + [sgn * 0.04 * k for k in range(1, 20) for sgn in (1, -1)]
    for notes in groups:
        placed = []
        for ann in notes:
            tx, ty0 = ann.xyann
            for dy in steps:
                ty = ty0 + dy * lim
                if not 0.03 * lim <= ty <= 0.97 * lim:
                    continue
                ann.xyann = (tx, ty)
                bb = box(ann)
                if not any(bb.overlaps(p) for p in placed):
                    break
            else:
                ann.xyann = (tx, ty0)  # no free spot: keep the first choice
            placed.append(box(ann))


def _plot_scatter(result: ExploreResult, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in CLASSES if c in result.extremes]
    n = max(1, len(classes))
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 5.8), squeeze=False, sharex=True, sharey=True)
    ok = [it for it in result.items if it.ok and it.width and it.height]
    wmax = max((it.width for it in ok), default=1)
    hmax = max((it.height for it in ok), default=1)
    lim = max(wmax, hmax) * 1.08
    all_notes = []
    for ax, cls in zip(axes[0], classes):
        g = [it for it in ok if it.label == cls]
        sizes = Counter((it.width, it.height) for it in g)
        uw, uh, uc = (np.array(v) for v in zip(*[(a, b, c) for (a, b), c in sizes.items()]))
        ax.scatter(uw, uh, s=np.minimum(9 * np.sqrt(uc), 600), alpha=0.45, color=_CLASS_COLORS[cls],
                   edgecolors="none")
        for ratio, name in ((1.0, "1:1"), (4 / 3, "4:3"), (3 / 4, "3:4")):
            x = np.array([0, lim])
            ax.plot(x, x / ratio, ls=":", lw=0.8, color="#999999")
            xe = min(lim, lim * ratio) * 0.97
            ax.text(xe, xe / ratio, name, fontsize=7, color="#777777", ha="right", va="bottom")
        # Annotate extremes; several extremes on one point share one box. Each box sits
        # between its point and the plot centre, aligned so that it stays inside the axes.
        at: dict[tuple[int, int], list[str]] = defaultdict(list)
        for e in result.extremes[cls]:
            at[(e["width"], e["height"])].append(f"{e['what']}: {e['id']}")
        cx, cy = 0.5 * lim, 0.45 * lim
        notes = []
        for k, ((x, y), labels) in enumerate(sorted(at.items(), key=lambda kv: kv[0][0] * kv[0][1])):
            if len(sizes) == 1:
                text = f"all {len(g):,} images: {x}x{y}"
            else:
                text = "\n".join(labels) + f"\n{x}x{y}" + (f" ({sizes[(x, y)]} images)" if sizes[(x, y)] > 1 else "")
            vx, vy = cx - x, cy - y
            norm = math.hypot(vx, vy) or 1.0
            dist = (0.16 + 0.05 * (k % 2)) * lim
            tx = min(max(x + vx / norm * dist, 0.03 * lim), 0.97 * lim)
            ty = min(max(y + vy / norm * dist, 0.03 * lim), 0.97 * lim)
            notes.append(ax.annotate(
                text, (x, y), xytext=(tx, ty), fontsize=8, multialignment="left",
                ha="left" if tx < 0.5 * lim else "right", va="bottom" if ty < 0.5 * lim else "top",
                arrowprops={"arrowstyle": "->", "color": "#333333", "lw": 0.8, "shrinkA": 0},
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#bbbbbb", "alpha": 0.9}))
        ax.set_title(f"{cls}: {len(g):,} images, {len(sizes):,} distinct size{'s' if len(sizes) != 1 else ''}")
        ax.set_xlabel("width (px)")
        ax.grid(alpha=0.25)
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_aspect("equal")
        all_notes.append(notes)
    axes[0][0].set_ylabel("height (px)")
    fig.suptitle("Image sizes per class (marker area grows with the number of images of that size; "
                 "dotted: aspect ratios; boxes name the extreme ids)", fontsize=11)
    fig.tight_layout()
    _separate_boxes(fig, all_notes, lim)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plain_log_ticks(ax: Any, lo: float, hi: float, *, aspect: bool) -> None:
    """Readable ticks (0.75, 1, 1.33 / 5, 10, 20 KiB) instead of 10^x on a log x axis."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if aspect:
        cand = [0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0, 4 / 3, 1.5, 2.0, 3.0, 4.0]
    else:
        cand = [m * 10.0 ** e for e in range(-1, 6) for m in (1, 2, 5)]
    ticks = [t for t in cand if lo * 0.95 <= t <= hi * 1.05] or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_hist(result: ExploreResult, path: Path, *, what: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if what == "filesize":
        vals_all = [it.nbytes / 1024 for it in result.items if it.nbytes > 0]
        xlabel, title = "file size (KiB, log scale)", "File sizes per class"
    else:
        vals_all = [it.width / it.height for it in result.items if it.ok and it.width and it.height]
        xlabel, title = "aspect ratio width / height (log scale)", "Aspect ratios per class"
    if vals_all:
        lo, hi = min(vals_all), max(vals_all)
        if hi <= lo:
            lo, hi = lo * 0.9, hi * 1.1
        bins = np.geomspace(lo, hi, 60)
        for cls in CLASSES:
            if what == "filesize":
                v = [it.nbytes / 1024 for it in result.items if it.label == cls and it.nbytes > 0]
            else:
                v = [it.width / it.height for it in result.items
                     if it.label == cls and it.ok and it.width and it.height]
            if v:
                ax.hist(v, bins=bins, histtype="step", lw=1.6, color=_CLASS_COLORS[cls],
                        label=f"{cls} (n={len(v):,}, median {np.median(v):.3g})")
        ax.set_xscale("log")
        _plain_log_ticks(ax, lo, hi, aspect=what != "filesize")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("files")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_bytes(items: Sequence[ImageInfo]) -> dict[str, bytes]:
    """Encoded bytes of some items (for thumbnails), by id; unreadable ones left out."""
    out: dict[str, bytes] = {}
    want_rec: dict[tuple[str, int], str] = {}
    for it in items:
        if it.path:
            try:
                out[it.id] = Path(it.path).read_bytes()
            except OSError:
                pass
        elif it.record:
            want_rec[it.record] = it.id
    if want_rec:
        folders = {str(Path(s).parent) for s, _ in want_rec}
        for folder in folders:
            for rec in iter_records(folder):
                key = (rec["shard"], rec["index"])
                if key in want_rec:
                    out[want_rec[key]] = rec["encoded"]
    return out


def _thumb_uri(data: bytes, size: int = 96) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001
        return None


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
h1{font-size:1.5em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.conflict{background:#ffecec} .muted{color:#777}
.group{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:0.75em} figure img{display:block;border:1px solid #ccc}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _h(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else _h(v)


def _html_counts(result: ExploreResult) -> str:
    rows = [("all", result.counts)] + list(result.counts_by_source.items())
    head = "".join(f"<th>{c}</th>" for c in (*CLASSES, "total"))
    body = "".join(f"<tr><td class=l>{_h(name)}</td>" + "".join(f"<td>{_fmt(c[k])}</td>" for k in (*CLASSES, "total"))
                   + "</tr>" for name, c in rows)
    return f"<table><tr><th class=l>source</th>{head}</tr>{body}</table>"


def _html_stats(result: ExploreResult) -> str:
    cols = [name for name, _ in _PCTS] + ["mean"]
    parts = []
    for metric in ("width", "height", "aspect", "megapixels", "kbytes"):
        rows = []
        for cls, st in result.stats.items():
            d = st[metric]
            rows.append(f"<tr><td class=l>{cls}</td><td>{st['n']['count']:,}</td>"
                        + "".join(f"<td>{_fmt(d.get(c, float('nan')))}</td>" for c in cols) + "</tr>")
        parts.append(f"<h3>{metric}</h3><table><tr><th class=l>class</th><th>n</th>"
                     + "".join(f"<th>{c}</th>" for c in cols) + "</tr>" + "".join(rows) + "</table>")
    return "".join(parts)


def _html_groups(groups: list[dict[str, Any]], thumbs: dict[str, str | None], limit: int, near: bool) -> str:
    if not groups:
        return "<p class=muted>none found</p>"
    rows = []
    for k, g in enumerate(groups[:limit]):
        figs = []
        for id_, lab in zip(g["ids"], g["labels"]):
            t = thumbs.get(id_)
            img = f"<img src='{t}' alt=''>" if t else ""
            figs.append(f"<figure>{img}{_h(id_)}<br><span class=muted>{lab}</span></figure>")
        info = f"max distance {g['max_distance']} bits" if near else f"{g['nbytes']:,} B<br><code>{g['sha256'][:12]}</code>"
        cls = " class=conflict" if g["label_conflict"] else ""
        flag = "<b>labels disagree</b><br>" if g["label_conflict"] else ""
        rows.append(f"<tr{cls}><td>{k + 1}</td><td class=l>{flag}{len(g['ids'])} files<br>{info}</td>"
                    f"<td class=l><div class=group>{''.join(figs)}</div></td></tr>")
    more = f"<p class=muted>{len(groups) - limit} more groups in summary.json</p>" if len(groups) > limit else ""
    return f"<table><tr><th>#</th><th class=l>group</th><th class=l>members</th></tr>{''.join(rows)}</table>{more}"


def write_report(result: ExploreResult, out_dir: str | os.PathLike, *, max_groups: int = 150,
                 thumbnails: bool = True) -> dict[str, Path]:
    """Write summary.json, the PNG plots and index.html into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "summary.json",
        "scatter": out / "sizes_scatter.png",
        "filesize": out / "filesize_hist.png",
        "aspect": out / "aspect_hist.png",
        "index": out / "index.html",
    }
    summary = result.summary()
    paths["summary"].write_text(json.dumps(summary, indent=1))
    _plot_scatter(result, paths["scatter"])
    _plot_hist(result, paths["filesize"], what="filesize")
    _plot_hist(result, paths["aspect"], what="aspect")

    thumbs: dict[str, str | None] = {}
    if thumbnails:
        shown = {id_ for g in result.duplicates[:max_groups] + result.near_duplicates[:max_groups]
                 for id_ in g["ids"]}
        shown |= {e["id"] for ex in result.extremes.values() for e in ex}
        data = _load_bytes([it for it in result.items if it.id in shown])
        thumbs = {k: _thumb_uri(v) for k, v in data.items()}

    ext_rows = []
    for cls, ex in result.extremes.items():
        figs = []
        for e in ex:
            t = thumbs.get(e["id"])
            img = f"<img src='{t}' alt=''>" if t else ""
            figs.append(f"<figure>{img}{e['what']}: {_h(e['id'])}<br><span class=muted>{e['width']}x{e['height']}, "
                        f"aspect {e['aspect']}</span></figure>")
        ext_rows.append(f"<tr><td class=l>{cls}</td><td class=l><div class=group>{''.join(figs)}</div></td></tr>")
    und = "".join(f"<tr><td class=l>{_h(u['id'])}</td><td class=l>{_h(u['kind'])}</td><td>{u['nbytes']:,}</td>"
                  f"<td class=l>{_h(u['reason'])}</td><td class=l><code>{_h(u['path'])}</code></td></tr>"
                  for u in result.undecodable)
    lc = summary["label_conflicts"]
    n_dup_files = sum(len(g["ids"]) for g in result.duplicates)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>catdog_tf explore</title>
<style>{_CSS}</style></head><body>
<h1>Data exploration</h1>
<p>Sources: {', '.join(f'<code>{_h(s)}</code>' for s in result.sources)}<br>
{len(result.items):,} files, {summary['n_decoded']:,} decoded, {len(result.undecodable)} undecodable;
scanned in {result.seconds:.1f} s ({result.files_per_s:,.0f} files/s, {result.params.get('workers')} workers).<br>
Exact duplicates: {len(result.duplicates)} groups ({n_dup_files} files, {lc['duplicates']} with cat/dog labels disagreeing).
Near-duplicates (pHash Hamming distance &le; {result.params['near_dup_threshold']} of 64 bits, exact copies merged):
{len(result.near_duplicates)} groups ({lc['near_duplicates']} with labels disagreeing).</p>
<h2>Counts</h2>{_html_counts(result)}
<h2>Image sizes</h2>
<img class=plot src="{paths['scatter'].name}" alt="width/height scatter per class">
<h3>Extremes</h3><table><tr><th class=l>class</th><th class=l>smallest / largest (pixels), widest / tallest
(aspect)</th></tr>{''.join(ext_rows)}</table>
{_html_stats(result)}
<img class=plot src="{paths['aspect'].name}" alt="aspect ratio histogram">
<h2>File sizes</h2>
<img class=plot src="{paths['filesize'].name}" alt="file size histogram">
<h2>Exact duplicates (sha256)</h2>{_html_groups(result.duplicates, thumbs, max_groups, near=False)}
<h2>Near-duplicates (pHash &le; {result.params['near_dup_threshold']})</h2>
{_html_groups(result.near_duplicates, thumbs, max_groups, near=True)}
<h2>Undecodable files</h2>
{'<table><tr><th class=l>id</th><th class=l>kind</th><th>bytes</th><th class=l>reason</th><th class=l>path</th></tr>'
 + und + '</table>' if und else '<p class=muted>none</p>'}
<p class=muted>Machine-readable: <a href="summary.json">summary.json</a></p>
</body></html>
"""
    paths["index"].write_text(page, encoding="utf-8")
    return paths


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.images) == bool(FLAGS.records):
        raise SystemExit("give either --images=FOLDER (repeatable) or --records=FOLDER")
    if FLAGS.records:
        result = explore_records(FLAGS.records, near_dup_threshold=FLAGS.near_dup_threshold,
                                 workers=FLAGS.workers, progress=FLAGS.progress)
    else:
        result = explore_folder(FLAGS.images, near_dup_threshold=FLAGS.near_dup_threshold,
                                workers=FLAGS.workers, progress=FLAGS.progress)
    paths = write_report(result, FLAGS.out)
    s = result.summary()
    print(f"{s['n_files']:,} files in {result.seconds:.1f} s ({result.files_per_s:,.0f} files/s)")
    print("counts:", ", ".join(f"{k} {v:,}" for k, v in s["counts"].items()))
    if "all" in s["stats"]:
        st = s["stats"]["all"]
        print(f"size: width {st['width']['min']:.0f}..{st['width']['median']:.0f}..{st['width']['max']:.0f}, "
              f"height {st['height']['min']:.0f}..{st['height']['median']:.0f}..{st['height']['max']:.0f} "
              "(min..median..max)")
    print(f"exact duplicate groups: {len(s['duplicates'])} "
          f"({s['label_conflicts']['duplicates']} with cat/dog labels disagreeing)")
    print(f"near-duplicate groups (pHash <= {FLAGS.near_dup_threshold}): {len(s['near_duplicates'])} "
          f"({s['label_conflicts']['near_duplicates']} with cat/dog labels disagreeing)")
    print(f"undecodable: {len(s['undecodable'])}")
    for u in s["undecodable"][:20]:
        print(f"  {u['id']}: {u['reason']}")
    if s["warnings"]:
        print(f"warnings: {len(s['warnings'])} (first: {s['warnings'][0]['id']}: {s['warnings'][0]['warning']})")
    print(f"report: {paths['index']}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_multi_string("images", [], "Kaggle-layout image folder (cat.N.jpg, dog.N.jpg, N.jpg) "
                              "or a Kaggle root with train/ and test/; repeatable.")
    flags.DEFINE_string("records", None, "Folder of TFRecord shards (*.tfrecord) from catdog_tf.records.")
    flags.DEFINE_string("out", "reports/explore", "Report folder (index.html, summary.json, PNGs).")
    flags.DEFINE_integer("near_dup_threshold", DEFAULT_NEAR_DUP_THRESHOLD,
                         "Max Hamming distance (of 64 pHash bits) for two images to be near-duplicates.",
                         lower_bound=0, upper_bound=64)
    flags.DEFINE_integer("workers", min(8, os.cpu_count() or 2), "Processes reading and decoding files "
                         "(1 = no pool, in this process).",
                         lower_bound=1)
    flags.DEFINE_boolean("progress", True, "Show a tqdm progress bar.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
