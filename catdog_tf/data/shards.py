"""Kaggle-layout folders (or zips) -> sharded TFRecords + manifest.json.

    python -m catdog_tf.records --input=../shared/data/kaggle200 --out=records

Every file found is either written or reported in the manifest's `skipped` list with
the reason, so `seen == written + len(skipped)` always holds. Original JPEG bytes are
kept; only files a decoder could not read as-is (CMYK, PNG/GIF content, EXIF rotation)
or files larger than `max_side` are re-encoded. With `store_size` every photo is stored
re-encoded at exactly that size (the fast input for a model of that input size).

The record format (one tf.train.Example per photo) is in catdog_tf/data/schema.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
import uuid

import tensorflow as tf

from catdog_tf import files
from catdog_tf.config import BuildConfig
from catdog_tf.data import kaggle, photos, schema, sources
from catdog_tf.files import sha256_file
from catdog_tf.data.sources import discover, RecordsError
from catdog_tf.data.manifest import MANIFEST, manifest_problem
from catdog_tf.errors import UserError

SHARD_SUFFIX = ".tfrecord"


# ---------------------------------------------------------------------------- splitting


def read_exclusions(path: str) -> set[str]:
    """One id per line (cat.123, dog.7 or 42; a file suffix is allowed); # starts a comment."""
    ids = set()
    try:
        text = files.read_text(path)
    except OSError as e:
        raise RecordsError(f"{path}: cannot read exclusion file ({e.strerror or e})") from e
    except tf.errors.OpError as e:  # gfile: NotFoundError, PermissionDeniedError, ...
        raise RecordsError(f"{path}: cannot read exclusion file ({_why(e)})") from e
    for n, line in enumerate(text.splitlines(), 1):
        token = line.split("#", 1)[0].strip()
        if token:
            id_ = kaggle.normalize_id(token)
            if id_ is None:
                raise RecordsError(f"{path}:{n}: {token!r} is not a photo id (cat.N, dog.N or N)")
            ids.add(id_)
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
        if folds and 0 < len(ranked) < folds:  # some folds would have none of this class, or no photo
            raise RecordsError(f"--folds={folds}: only {len(ranked)} {('cat', 'dog')[label]} photo(s); give at most "
                               f"{len(ranked)} folds")
        if folds:
            for r, it in enumerate(ranked):
                splits.setdefault(f"fold{r % folds}", []).append(it)
        else:
            n_val = round(len(ranked) * val_fraction)
            splits.setdefault("validation", []).extend(ranked[:n_val])
            splits.setdefault("train", []).extend(ranked[n_val:])
    test = [it for it in items if it.label == kaggle.UNLABELED]
    if test:
        splits["test"] = test
    # Mix the classes within each split so any shard holds both.
    return {name: sorted(v, key=lambda it: _rank_key(seed + 1, it.id)) for name, v in splits.items() if v}


def fold_of(split: str) -> int:
    return int(split[4:]) if split.startswith("fold") else -1


# ---------------------------------------------------------------------------- writing


def _shard_fingerprint(items: list[photos.Checked], cfg: BuildConfig, fold: int) -> str:
    h = hashlib.sha256(json.dumps([cfg.max_side, cfg.jpeg_quality, fold] +
                                 ([cfg.store_size] if cfg.store_size else [])).encode())
    for it in items:
        h.update(f"{it.id}|{it.origin}|{it.height}|{it.width}|{it.convert}|{it.digest}\n".encode())
    return h.hexdigest()


def _why(e: Exception) -> str:
    return getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)


def _write_shard(path: str, items: list[photos.Checked], cfg: BuildConfig, fold: int, fingerprint: str) -> dict:
    out, name = files.parent(path), files.name(path)
    marker = files.join(out, ".done", name + ".json")
    if files.exists(path) and files.exists(marker):
        try:
            done = json.loads(files.read_text(marker))
        except (UserError, ValueError):
            done = {}
        # Reused only when it is the shard this build would write and its bytes are the ones recorded.
        if isinstance(done, dict) and done.get("fingerprint") == fingerprint and done.get("bytes") == files.size(path) \
                and done.get("sha256") == sha256_file(path):
            return {**done, "reused": True}
    tmp = files.join(out, f".{name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with tf.io.TFRecordWriter(tmp) as w:
            for it in items:
                w.write(schema.encode(encoded=photos.stored_bytes(it, cfg.max_side, cfg.jpeg_quality, cfg.store_size), id=it.id,
                                      label=it.label, height=it.height, width=it.width, fold=fold))
        tf.io.gfile.rename(tmp, path, overwrite=True)  # atomic: a reader never sees half a shard
    except (tf.errors.OpError, OSError) as e:  # disk full, file-size limit, ...
        files.remove(tmp)
        raise OSError(f"cannot write {path}: {_why(e)}") from None
    done = {"file": name, "count": len(items), "bytes": files.size(path),
            "sha256": sha256_file(path), "fingerprint": fingerprint}
    files.write_text(marker, json.dumps(done))
    return {**done, "reused": False}


def _num_shards(items: list[photos.Checked], cfg: BuildConfig) -> int:
    # TF's guidance: shards of tens to hundreds of MB, and enough of them to feed many
    # parallel readers; for small splits the second rule wins (>= 256 images a shard).
    est_bytes = len(items) * 40_000 if cfg.max_side or cfg.store_size else sum(it.height * it.width for it in items) * 0.3
    by_size = math.ceil(est_bytes / (cfg.shard_mb * 1e6))
    # Never more shards than photos: a tiny --shard_mb would otherwise ask for billions of files.
    return max(1, min(len(items), max(by_size, min(cfg.min_shards, math.ceil(len(items) / 256)))))


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr,
                disable=total == 0, mininterval=1.0)


def build(inputs: list[str] | None, cfg: BuildConfig) -> dict:
    """Builds shards and OUT/manifest.json; returns the manifest.

    Safe to re-run and to interrupt: shards are named by their content, the new manifest
    replaces the old one atomically once every new shard is written, and only then are the
    previous build's shards removed, so OUT always holds one whole build. Two builds into one
    OUT at once are refused (a lock file)."""
    t0 = time.time()
    out = str(cfg.out)
    files.check_out(out, "records", {"input": inputs or [], "exclude": cfg.exclude}, scanned=("input",))
    files.makedirs(out)
    with (_remote_lock(out) if files.is_remote(out) else _lock(out)):
        return _build(inputs, cfg, out, t0)


@contextlib.contextmanager
def _lock(out: str):
    """A local OUT: an flock on OUT/.lock, released by the OS even when the build is killed."""
    f = open(os.path.join(out, ".lock"), "a+")  # local only: flock has no gs:// or hdfs:// twin
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RecordsError(f"{out}: another build is writing this folder ({holder}); wait for it or "
                           "choose another --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


@contextlib.contextmanager
def _remote_lock(out: str):
    """A remote OUT (gs://, hdfs://, ...): object stores have no flock and no O_EXCL, so this is
    a best-effort lock FILE through gfile: refused when OUT/.lock exists, else written and read
    back (two builds starting in the same instant can still both win), removed at the end. A
    build killed here leaves the file behind: the error says how to clear it."""
    path = files.join(out, ".lock")
    token = f"pid {os.getpid()} on {socket.gethostname()} ({uuid.uuid4().hex[:8]})"

    def refuse(holder: str):
        return RecordsError(f"{out}: another build is writing this folder ({holder or 'another process'}); wait for "
                            f"it or choose another --out (a build that was killed leaves {path}: delete it then)")

    if files.exists(path):
        raise refuse(files.read_text(path).strip())
    files.write_text(path, f"{token}\n")
    if (holder := files.read_text(path).strip()) != token:
        raise refuse(holder)
    try:
        yield
    finally:
        files.remove(path)


def _previous_shards(out: str) -> set[str]:
    """The shard names the folder's previous manifest lists (none when it has no valid one)."""
    try:
        m = json.loads(files.read_text(files.join(out, MANIFEST)))
    except (OSError, tf.errors.OpError, ValueError):
        return set()
    if manifest_problem(m):
        return set()
    return {sh["file"] for s in m["splits"].values() for sh in s["shards"]}


def _first(skipped: list[dict]) -> str:
    return f"first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else "nothing found"


def _build(inputs: list[str] | None, cfg: BuildConfig, out: str, t0: float) -> dict:
    workers = cfg.workers or os.cpu_count() or 1
    candidates, skipped, source = _candidates(inputs, cfg)
    seen = len(candidates) + len(skipped)
    excluded_candidates, unmatched = _exclusions(cfg, candidates)
    checked, bad = _check_all(candidates, cfg, workers)
    skipped += bad
    _refuse_losses(cfg, out, source, candidates, checked, bad, skipped)

    excluded = sorted(it.id for it in checked if it.id.lower() in excluded_candidates)
    splits = assign_splits(checked, cfg.val_fraction, cfg.folds, cfg.seed)
    jobs = _plan(splits, cfg, out)
    previous = _previous_shards(out)
    for partial in files.glob(files.join(out, f".*{SHARD_SUFFIX}.tmp-*")):  # a killed build's unfinished shards
        files.remove(partial)
    results = _write_all(jobs, cfg, workers)

    manifest = {
        "format": "catdog_tf.records/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source,
        "seen": seen,
        "written": len(checked),
        "skipped": skipped,
        "excluded": excluded,
        "exclude_file": cfg.exclude,
        "exclude_unmatched": unmatched,
        "converted": [{"file": it.origin, "id": it.id, "reason": it.convert} for it in checked if it.convert],
        "seed": cfg.seed,
        "val_fraction": None if cfg.folds else cfg.val_fraction,
        "folds": cfg.folds,
        "max_side": cfg.max_side,
        "store_size": cfg.store_size,
        "splits": _split_entries(splits, jobs, results, excluded_candidates),
    }
    assert manifest["seen"] == manifest["written"] + len(skipped), "count reconciliation failed"
    files.write_text(files.join(out, MANIFEST), json.dumps(manifest, indent=1))  # atomic: temp name + rename
    _remove_old_shards(out, {files.name(j[1]) for j in jobs}, previous)
    _summary(manifest, jobs, results, time.time() - t0, out)
    return manifest


def _candidates(inputs: list[str] | None, cfg: BuildConfig) -> tuple[list, list[dict], list[str]]:
    """(the photo files found, the files skipped already, the manifest's `source`)."""
    if inputs:
        candidates, skipped = discover(inputs, int(cfg.max_file_mb * 2**20))
        source = [str(i) if files.is_remote(i) else os.path.realpath(i) for i in inputs]
    else:
        candidates, skipped = sources.tfds_candidates()
        source = ["tfds:cats_vs_dogs"]
    return candidates, skipped, source


def _exclusions(cfg: BuildConfig, candidates: list) -> tuple[set[str], list[str]]:
    """(lowercased ids of the labeled candidates on the exclusion list, the list's ids that match none)."""
    # The exclusion list keeps photos out of TRAINING only: they are stored in their folds (so
    # held-out and out-of-fold figures cover every photo, as a Kaggle test set would) and the
    # manifest lists them for the trainers to skip.
    ex_ids = read_exclusions(cfg.exclude) if cfg.exclude else set()
    excluded_candidates = {c.id.lower() for c in candidates if c.label != kaggle.UNLABELED} & ex_ids
    unmatched = sorted(ex_ids - excluded_candidates)
    if unmatched:  # a typo, or a list for other photos: said, and refused under --strict
        print(f"warning: {cfg.exclude}: {len(unmatched)} of {len(ex_ids)} id(s) match no labeled photo of the "
              f"input (e.g. {', '.join(unmatched[:3])})", file=sys.stderr)
        if cfg.strict:
            raise RecordsError(f"--strict and {cfg.exclude} names {len(unmatched)} id(s) no labeled photo has "
                               f"(e.g. {', '.join(unmatched[:3])}); nothing written")
    return excluded_candidates, unmatched


def _check_all(candidates: list, cfg: BuildConfig, workers: int) -> tuple[list[photos.Checked], list[dict]]:
    """(the candidates that decoded, in order; the skip entries of those that did not)."""
    checked: list[photos.Checked] = []
    bad: list[dict] = []
    with _progress(len(candidates), "checking") as bar, concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for res in pool.map(lambda c: photos.check(c, cfg.max_pixels, cfg.max_side, cfg.store_size), candidates):
            bar.update()
            if isinstance(res, photos.Checked):
                checked.append(res)
            else:
                bad.append(res)
                bar.write(f"skip {res['file']}: {res['reason']}", file=sys.stderr)
    return checked, bad


def _refuse_losses(cfg: BuildConfig, out: str, source: list[str], candidates: list,
                   checked: list[photos.Checked], bad: list[dict], skipped: list[dict]) -> None:
    """The refusals that come before anything is written, so the folder keeps its previous build."""
    if cfg.strict and skipped:
        raise RecordsError(f"--strict and {len(skipped)} file(s) skipped ({_first(skipped)}); nothing written, "
                           f"{out} unchanged")
    # A build that silently loses what the user meant to build is an error, not a warning.
    for kind, is_kind in (("labeled", lambda x: x.label != kaggle.UNLABELED), ("test", lambda x: x.label == kaggle.UNLABELED)):
        found, written = sum(map(is_kind, candidates)), sum(map(is_kind, checked))
        if found and not written:
            raise RecordsError(f"all {found} {kind} photos were skipped ({_first(bad)}); nothing written")
    if not any(it.label != kaggle.UNLABELED for it in checked):
        raise RecordsError(f"no labeled photo (cat.N.jpg / dog.N.jpg) in {', '.join(source)} "
                           f"({len(skipped)} file(s) skipped; {_first(skipped)}); nothing written")


def _plan(splits: dict[str, list], cfg: BuildConfig, out: str) -> list[tuple]:
    """The shards to write: (split, path, photos, fold, fingerprint) each."""
    jobs = []
    for split, items in splits.items():
        n = _num_shards(items, cfg)
        for k in range(n):
            part = items[k::n]
            fold = fold_of(split)
            fp = _shard_fingerprint(part, cfg, fold)
            # Named by content: a new build never overwrites a shard the current manifest lists.
            jobs.append((split, files.join(out, f"{split}-{k:05d}-of-{n:05d}-{fp[:12]}{SHARD_SUFFIX}"), part, fold,
                         fp))
    return jobs


def _write_all(jobs: list[tuple], cfg: BuildConfig, workers: int) -> dict[str, dict]:
    """Shard name -> what _write_shard returned for it."""
    results: dict[str, dict] = {}
    # The bar closes (ends its line) before an error propagates, so the error is a line of its own.
    with _progress(sum(len(j[2]) for j in jobs), "writing") as bar, \
            concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futs = {pool.submit(_write_shard, path, part, cfg, fold, fp): (split, path, part)
                for split, path, part, fold, fp in jobs}
        for fut in concurrent.futures.as_completed(futs):
            split, path, part = futs[fut]
            results[files.name(path)] = fut.result()
            bar.update(len(part))
    return results


def _split_entries(splits: dict[str, list], jobs: list[tuple], results: dict[str, dict],
                   excluded_candidates: set[str]) -> dict[str, dict]:
    """The manifest's `splits`: counts and shards (in name order) of each split."""
    entries = {}
    for split, items in splits.items():
        shards = sorted((j for j in jobs if j[0] == split), key=lambda j: files.name(j[1]))
        entries[split] = {
            "count": len(items),
            "cat": sum(it.label == 0 for it in items),
            "dog": sum(it.label == 1 for it in items),
            "unlabeled": sum(it.label == kaggle.UNLABELED for it in items),
            "excluded": sum(it.id.lower() in excluded_candidates for it in items),
            "fold": fold_of(split),
            "shards": [{k: results[files.name(j[1])][k] for k in ("file", "count", "bytes", "sha256")} for j in shards],
        }
    return entries


def _summary(manifest: dict, jobs: list[tuple], results: dict[str, dict], dt: float, out: str) -> None:
    reused = sum(r["reused"] for r in results.values())
    print(f"records: seen {manifest['seen']}, written {manifest['written']}, skipped {len(manifest['skipped'])}"
          f", {len(manifest['excluded'])} of them excluded from training, {len(jobs)} shards ({reused} reused) in "
          f"{dt:.1f}s ({manifest['written'] / max(dt, 1e-9):.0f} img/s) -> {files.join(out, MANIFEST)}",
          file=sys.stderr)
    for split, s in manifest["splits"].items():
        print(f"  {split:<11} {s['count']:>6} images  cat {s['cat']:>6}  dog {s['dog']:>6}"
              f"  {len(s['shards'])} shards", file=sys.stderr)


def _remove_old_shards(out: str, current: set[str], previous: set[str]) -> None:
    """Shards the previous manifest listed, or that an interrupted build here wrote (they have
    a .done marker), are removed; any other *.tfrecord is someone else's: left alone, said."""
    ours = {files.name(m)[:-len(".json")] for m in files.glob(files.join(out, ".done", f"*{SHARD_SUFFIX}.json"))}
    for f in files.glob(files.join(out, f"*{SHARD_SUFFIX}")):
        name = files.name(f)
        if name in current:
            continue
        if name in previous or name in ours:
            files.remove(f)
            files.remove(files.join(out, ".done", name + ".json"))
        else:
            print(f"warning: {f}: not written by a build here; left alone", file=sys.stderr)
