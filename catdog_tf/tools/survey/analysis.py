"""From scanned items to findings: counts, size statistics, extremes, exact and near duplicates;
and the two entry points that scan and analyze (`explore_folder`, `explore_records`)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from catdog_tf.config import ExploreConfig
from catdog_tf.tools.survey.scan import CLASSES, ImageInfo, natural_key, scan_images, scan_records

# The default is ExploreConfig's (written once, in catdog_tf/config.py). Why 6: pHash
# distances are even (32 bits above the median each). On kaggle200/train every pair at
# distance <= 4 was the same photo re-saved, every pair at 8 or 10 looked at was two different
# photos (counts by distance 0..12: 12, 0, 4, 0, 1, 0, 0, 0, 6, 0, 84, 0, 750).
DEFAULT_NEAR_DUP_THRESHOLD = ExploreConfig().near_dup_threshold
PERCENTILES = (("min", 0), ("p1", 1), ("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95),
               ("p99", 99), ("max", 100))


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


# --------------------------------------------------------------------------- counts and sizes


def _describe(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [p for _, p in PERCENTILES])
    d = {name: round(float(v), 4) for (name, _), v in zip(PERCENTILES, q)}
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


# --------------------------------------------------------------------------- duplicates


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
    groups.sort(key=lambda d: (not d["label_conflict"], -len(d["ids"]), natural_key(d["ids"][0])))
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
    groups.sort(key=lambda d: (not d["label_conflict"], -len(d["ids"]), natural_key(d["ids"][0])))
    return groups


def _undecodable(items: Sequence[ImageInfo]) -> list[dict[str, Any]]:
    return [{"id": it.id, "path": it.path if it.path else (f"{it.record[0]}#{it.record[1]}" if it.record else None),
             "label": it.label, "nbytes": it.nbytes, "kind": it.error_kind, "reason": it.error}
            for it in items if it.error is not None]


# --------------------------------------------------------------------------- entry points


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
    """Explore a records folder from `catdog_tf.records`: the shards its manifest.json lists
    (a folder without a manifest: its *.tfrecord files)."""
    t0 = time.perf_counter()
    items = scan_records(folder, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    return analyze(items, sources=[str(folder)], near_dup_threshold=near_dup_threshold,
                   seconds=seconds, params={"workers": workers, "input": "records"})
