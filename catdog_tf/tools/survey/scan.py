"""Reading: file listing, the perceptual hash, per-file and per-record analysis, the process pool.

Speed: one task per file, in chunks over a process pool (`workers`). A task reads the
file once, hashes the bytes, reads the size from the header and decodes the JPEG through
`Image.draft` (libjpeg DCT scaling, 1/2..1/8 of the size, grayscale) for the perceptual
hash; the draft decode still walks the whole entropy-coded stream, so truncated files are
caught. Processes, not threads: with 200x200 JPEGs the GIL-bound part of a task is as long
as the decode, and 2 threads measured no faster than 1.

Perceptual hash: the standard pHash (as in the `imagehash` package: grayscale, 32x32
Lanczos resize, 2-D DCT-II, the 8x8 lowest frequencies against their median -> 64 bits),
written in numpy (a 8x32 cosine matrix) instead of depending on `imagehash`; see
`phash` for the reasoning.

Paths: a local folder is read with plain file I/O, so exploring it never imports TensorFlow
(and the pool can fork); a URL (gs://, hdfs://, ram://) goes through tf.io.gfile, imported on
first use (storage.py, which report.py writes through too).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import io
import itertools
import multiprocessing as mp
import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from catdog_tf import localio
from catdog_tf.data import kaggle
from catdog_tf.errors import UserError
from catdog_tf.tools.survey.storage import as_path, basename, gfile, is_remote, isdir, isfile, join, read_bytes

CLASSES = (*kaggle.LABELS, "unlabeled", "other")  # cat, dog, unlabeled, other
LABEL_TO_CLASS = {**{label: name for name, label in kaggle.LABELS.items()}, kaggle.UNLABELED: "unlabeled"}
BAD_RECORD_LABEL = -2  # a record that does not parse: class "other"
KAGGLE_SPLITS = ("train", "test", "test1")  # sub-folders scanned when given a Kaggle root
# As catdog_tf.data.shards writes them (not imported from there: that module imports TensorFlow).
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord"
HASH_SIZE = 8  # 8x8 DCT coefficients -> 64-bit hash
_HASH_IMG = 32  # pHash input size (4 x HASH_SIZE, as imagehash's highfreq_factor=4)


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
    error_kind: str | None = None  # empty / not_an_image / truncated / decode_error / bad_record / ...
    warning: str | None = None  # decoded, but something is off (TFRecord size != decoded size)

    @property
    def ok(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------- names and files


def classify_name(filename: str) -> str:
    """Class of a file name by the Kaggle rules (catdog_tf.data.kaggle): 'cat.1.jpg' -> cat,
    '7.jpg' -> unlabeled; anything else, including a non-image suffix ('cat.1.webp'), -> other."""
    name = kaggle.parse(filename)
    return "other" if name is None else LABEL_TO_CLASS[name.label]


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_files(folder: str | os.PathLike) -> list[tuple[Any, str]]:
    """Files of a Kaggle-layout folder as (path, id) pairs, naturally sorted.

    A plain folder gives its regular, non-hidden files (all of them: a stray non-image
    file shows up as class "other" and as undecodable). A Kaggle root (a folder with a
    `train/` or `test/` sub-folder) gives the files of those sub-folders, with ids
    prefixed by the sub-folder ("train/cat.1", "test/7"). An id is the file name without
    its suffix, so two files never share one. Paths are Paths, or strings for a URL folder.
    """
    folder = as_path(folder)
    if not isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    splits = [join(folder, s) for s in KAGGLE_SPLITS if isdir(join(folder, s))]
    if splits:
        out: list[tuple[Any, str]] = []
        for sub in splits:
            out += [(p, f"{basename(sub)}/{i}") for p, i in list_image_files(sub)]
        return out
    if isinstance(folder, str):
        g = gfile()
        files = [join(folder, n.rstrip("/")) for n in g.listdir(folder) if not n.startswith(".")]
        files = [p for p in files if not g.isdir(p)]
    else:
        files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    files.sort(key=lambda p: natural_key(basename(p)))
    return [(p, _strip_ext(basename(p))) for p in files]


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
        data = read_bytes(path)
    except OSError as e:
        return {"nbytes": 0, "sha256": "", "error": f"cannot read: {e.strerror or e}", "error_kind": "unreadable"}
    return analyze_bytes(data)


def _analyze_record(rec: dict[str, Any]) -> dict[str, Any]:
    r = analyze_bytes(rec["encoded"])
    if rec.get("error"):
        r.update(error=rec["error"], error_kind="bad_record")
    elif r["error"] is None and rec.get("width") is not None and (
            (rec["width"], rec["height"]) != (r["width"], r["height"])):
        r["declared_size_mismatch"] = [rec["width"], rec["height"]]
    return r


# --------------------------------------------------------------------------- the pool


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


# --------------------------------------------------------------------------- folders


def _source_names(folders: Sequence[Any]) -> list[str]:
    """Short, distinct display names for source folders (last 1, 2, ... path parts)."""
    parts = [f.split("://", 1)[1].split("/") if isinstance(f, str) else f.resolve().parts for f in folders]
    for depth in range(1, 8):
        names = ["/".join(p[-depth:]) for p in parts]
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
    folders = [as_path(f) for f in folders]
    names = _source_names(folders)
    entries: list[tuple[Any, str, str]] = []
    for folder, name in zip(folders, names):
        for path, id_ in list_image_files(folder):
            full_id = f"{name}/{id_}" if len(folders) > 1 else id_
            entries.append((path, full_id, str(folder)))
    results = _pool_map(_analyze_file, [str(p) for p, _, _ in entries], workers, len(entries),
                        progress, "explore")
    items = []
    for (path, id_, src), r in zip(entries, results):
        items.append(ImageInfo(id=id_, label=classify_name(basename(path)), source=src, path=str(path), **r))
    return items


# --------------------------------------------------------------------------- records


def record_shards(folder: str | os.PathLike) -> list[Any]:
    """The shards of a records folder, sorted: every shard its manifest.json lists (all
    splits), or, in a folder without a manifest, its *.tfrecord files (Paths; strings for a
    URL folder)."""
    folder = as_path(folder)
    if not isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    manifest = join(folder, MANIFEST)
    if isfile(manifest):
        # The package's own manifest reader: its schema, plain shard names, sizes (imports TensorFlow,
        # as reading the shards does anyway).
        from catdog_tf.data import manifest as records_manifest

        shards = records_manifest.all_shard_files(str(folder))
        if not shards:
            raise FileNotFoundError(f"{manifest} lists no shards")
        return shards
    shards = sorted(gfile().glob(f"{folder}/*{SHARD_SUFFIX}") if isinstance(folder, str)
                    else folder.glob(f"*{SHARD_SUFFIX}"))
    if not shards:
        raise FileNotFoundError(f"no {MANIFEST} and no *{SHARD_SUFFIX} shards in {folder}")
    return shards


def iter_records(folder: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the examples of a records folder's shards (see `record_shards`) as plain dicts.

    Keys: id (str), label (int: 0 cat, 1 dog, -1 unlabeled), height, width (declared,
    int), encoded (bytes), shard (str), index (int, position in the shard). A record that
    `schema.to_python` rejects yields id "<shard>#<index>", label BAD_RECORD_LABEL,
    encoded=b"" and key `error`.
    """
    # Local imports: only the records path pays for TensorFlow (the schema imports it too);
    # exploring an image folder never loads it.
    import tensorflow as tf

    from catdog_tf.data import manifest as records_manifest
    from catdog_tf.data import schema

    has_manifest = isfile(join(as_path(folder), MANIFEST))
    for shard in record_shards(folder):
        if not is_remote(shard):
            localio.check_regular(shard)  # a FIFO named like a shard would block TFRecordDataset forever
        # A damaged shard of a built folder is named by its sha256; a bare shard by its own name.
        with records_manifest.damage_named(str(folder)) if has_manifest else _named(shard):
            for index, raw in enumerate(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()):
                rec: dict[str, Any] = {"shard": str(shard), "index": index}
                try:
                    ex = schema.to_python(raw)
                except ValueError as e:
                    rec.update(id=f"{basename(shard)}#{index}", label=BAD_RECORD_LABEL, height=None, width=None,
                               encoded=b"", error=f"bad record: {e}")
                else:
                    rec.update({k: ex[k] for k in ("id", "label", "height", "width", "encoded")})
                yield rec


@contextlib.contextmanager
def _named(shard):
    import tensorflow as tf

    try:
        yield
    except tf.errors.DataLossError as e:
        raise UserError(f"{shard}: damaged ({e.message.strip().splitlines()[0]})") from None


def scan_records(folder: str | os.PathLike, *, workers: int = 2, progress: bool = True) -> list[ImageInfo]:
    """Analyze every example of the shards in the records folder `folder` (see `iter_records`)."""
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
