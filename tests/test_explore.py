"""Tests of catdog_tf.tools.survey (and `python -m catdog_tf.explore`) on tiny synthetic JPEGs plus
a few copies of real photos."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from PIL import Image

from catdog_tf.errors import UserError
from catdog_tf.tools import survey
from catdog_tf.tools.survey import scan
from conftest import KAGGLE_NATIVE, REPO, require

NATIVE = KAGGLE_NATIVE / "train"


def _smooth_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A random smooth colour field: strong low frequencies, so pHashes are stable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _real(name: str) -> bytes:
    return require(NATIVE / name).read_bytes()


def _build_folder(folder: Path) -> dict[str, bytes]:
    """Write the test folder; return {file name: bytes}."""
    files: dict[str, bytes] = {}
    # 6 distinct synthetic images (3 cats, 3 dogs) and 2 unlabeled ones.
    for k, name in enumerate(["cat.1001", "cat.1002", "cat.1003", "dog.1001", "dog.1002", "dog.1003",
                              "501", "502"]):
        files[f"{name}.jpg"] = _jpeg(_smooth_image(k, size=(160 + 8 * k, 120 + 4 * k)))
    # Real photos, copied under their own names.
    for name in ["cat.1.jpg", "cat.2.jpg", "dog.1.jpg", "dog.2.jpg"]:
        files[name] = _real(name)
    # Exact duplicates: a same-label copy and a copy whose label disagrees (cat photo as dog).
    files["cat.2001.jpg"] = files["cat.1.jpg"]
    files["dog.2001.jpg"] = files["cat.2.jpg"]
    # Near duplicates: re-encoded at low quality, and slightly resized + re-encoded.
    dog1 = Image.open(io.BytesIO(files["dog.1.jpg"]))
    files["dog.3001.jpg"] = _jpeg(dog1, quality=30)
    files["dog.3002.jpg"] = _jpeg(dog1.resize((int(dog1.width * 0.9), int(dog1.height * 0.9))), quality=85)
    files["cat.3001.jpg"] = _jpeg(_smooth_image(0, size=(160, 120)), quality=35)  # ~ cat.1001
    # Bad files: zero bytes, truncated JPEG, text named .jpg, a non-image with another name.
    files["cat.9000.jpg"] = b""
    files["dog.9001.jpg"] = files["dog.2.jpg"][: len(files["dog.2.jpg"]) // 2]
    files["503.jpg"] = b"this is not a JPEG at all\n" * 10
    files["notes.txt"] = b"hello"
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / ".hidden").write_bytes(b"ignored")  # hidden files are not listed
    return files


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("kaggle")
    _build_folder(f)
    return f


@pytest.fixture(scope="module")
def result(folder) -> survey.ExploreResult:
    return survey.explore_folder(folder, workers=1, progress=False)  # default threshold (6)


def _group_sets(groups) -> list[frozenset[str]]:
    return [frozenset(g["ids"]) for g in groups]


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("name,cls", [
    ("cat.1.jpg", "cat"), ("dog.12345.jpg", "dog"), ("CAT.7.JPG", "cat"), ("42.jpg", "unlabeled"),
    ("cat.jpg", "other"), ("notes.txt", "other"), ("bird.1.jpg", "other"), ("cat.1.2.jpg", "other"),
    # The rules of catdog_tf.data.kaggle: only image suffixes name a photo.
    ("dog.3.PNG", "dog"), ("7.jpeg", "unlabeled"), ("cat.1.webp", "other"), ("42.txt", "other"),
])
def test_classify_name(name, cls):
    assert survey.classify_name(name) == cls


def test_phash_is_the_standard_dct_phash():
    """Our numpy pHash equals the imagehash definition written with scipy's DCT."""
    for seed in range(5):
        img = _smooth_image(seed, size=(97 + seed, 61))
        px = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
        low = scipy.fft.dct(scipy.fft.dct(px, axis=0), axis=1)[:8, :8]
        bits = "".join("1" if b else "0" for b in (low > np.median(low)).ravel())
        assert survey.phash(img) == int(bits, 2)


def test_phash_separates_different_images():
    hashes = [survey.phash(_smooth_image(s)) for s in range(20)]
    dists = [survey.hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(dists) > 8
    assert 20 < np.mean(dists) < 44  # about 32 for unrelated images


def test_hash_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, size=300, dtype=np.uint64)]
    hashes += [h ^ (1 << int(b)) for h, b in zip(hashes[:40], rng.integers(0, 64, 40))]  # 1-bit variants
    expected = {(i, j, survey.hamming(a, b)) for i, a in enumerate(hashes) for j, b in enumerate(hashes)
                if i < j and survey.hamming(a, b) <= 12}
    got = survey.hash_pairs(np.array(hashes, dtype=np.uint64), 12, block=64)
    assert set(got) == expected
    assert len(expected) >= 40


def test_analyze_bytes_never_raises_on_bad_input():
    good = _jpeg(_smooth_image(1))
    cases = {
        b"": "empty",
        b"garbage" * 100: "not_an_image",
        good[: len(good) // 2]: "truncated",
        good[:30]: None,  # header cut short: any error kind, but an error
        b"\xff\xd8\xff\xe0" + b"\x00" * 50: None,
    }
    for data, kind in cases.items():
        r = survey.analyze_bytes(data)
        assert r["error"], data[:20]
        assert r["phash"] is None
        if kind:
            assert r["error_kind"] == kind, r
    ok = survey.analyze_bytes(good)
    assert ok["error"] is None and (ok["width"], ok["height"]) == (160, 120) and ok["format"] == "JPEG"


# --------------------------------------------------------------------------- explore_folder


def test_counts(result):
    # cats: 1001-1003, 1, 2, 2001, 3001, 9000 = 8; dogs: 1001-1003, 1, 2, 2001, 3001, 3002, 9001 = 9
    assert result.counts == {"cat": 8, "dog": 9, "unlabeled": 3, "other": 1, "total": 21}
    ids = {it.id for it in result.items}
    assert "cat.1" in ids and "501" in ids and "notes" in ids and ".hidden" not in ids


def test_exact_duplicates(result):
    groups = {frozenset(g["ids"]): g for g in result.duplicates}
    assert set(groups) == {frozenset({"cat.1", "cat.2001"}), frozenset({"cat.2", "dog.2001"})}
    assert groups[frozenset({"cat.2", "dog.2001"})]["label_conflict"] is True
    assert groups[frozenset({"cat.1", "cat.2001"})]["label_conflict"] is False
    assert result.duplicates[0]["label_conflict"]  # conflicts are listed first
    assert result.summary()["label_conflicts"]["duplicates"] == 1


def test_near_duplicates(result):
    sets = _group_sets(result.near_duplicates)
    assert frozenset({"dog.1", "dog.3001", "dog.3002"}) in sets
    assert frozenset({"cat.1001", "cat.3001"}) in sets
    # Different images are not grouped: every group is one of the planted ones.
    assert len(sets) == 2, result.near_duplicates
    for g in result.near_duplicates:
        assert g["max_distance"] <= survey.DEFAULT_NEAR_DUP_THRESHOLD
        assert not g["label_conflict"]


def test_exact_copies_are_not_near_duplicate_groups(result):
    # cat.1 / cat.2001 are identical: reported once, as exact duplicates only.
    assert not any("cat.2001" in g["ids"] for g in result.near_duplicates)


def test_undecodable(result):
    und = {u["id"]: u for u in result.undecodable}
    assert set(und) == {"cat.9000", "dog.9001", "503", "notes"}
    assert und["cat.9000"]["kind"] == "empty"
    assert und["dog.9001"]["kind"] == "truncated"
    assert und["503"]["kind"] == "not_an_image"
    assert und["notes"]["kind"] == "not_an_image"
    assert all(u["reason"] and u["path"].endswith(u["id"] + (".txt" if u["id"] == "notes" else ".jpg"))
               for u in und.values())


def test_size_stats_and_extremes(result, folder):
    real = {n: Image.open(folder / f"{n}.jpg").size for n in ["cat.1", "cat.2", "dog.1", "dog.2"]}
    st = result.stats
    assert st["all"]["n"]["count"] == 21 - 4
    assert st["unlabeled"]["n"]["count"] == 2  # 501, 502 (503 is not an image)
    assert "other" not in st  # notes.txt has no size
    cat_w = [real["cat.1"][0], real["cat.2"][0], real["cat.1"][0], 160, 168, 176, 160]
    assert st["cat"]["width"]["min"] == min(cat_w)
    assert st["cat"]["width"]["max"] == max(cat_w)
    assert st["cat"]["width"]["median"] == float(np.median(cat_w))
    ex = {e["what"]: e for e in result.extremes["unlabeled"]}
    assert ex["smallest"]["id"] == "501" and ex["largest"]["id"] == "502"
    assert ex["largest"]["width"] == 160 + 8 * 7 and ex["largest"]["height"] == 120 + 4 * 7


def test_pool_matches_serial(folder, result):
    pooled = survey.scan_images(folder, workers=2, progress=False)
    # Below 256 files per worker the pool is skipped, so force it through _pool_map.
    direct = scan._pool_map(scan._analyze_file, [it.path for it in result.items], 2, None, False, "t",
                            chunk_size=3)
    assert [it.sha256 for it in pooled] == [it.sha256 for it in result.items]
    assert [d["phash"] for d in direct] == [it.phash for it in result.items]
    assert [d["error_kind"] for d in direct] == [it.error_kind for it in result.items]


def test_kaggle_root_and_several_folders(tmp_path):
    for split, names in {"train": ["cat.1", "dog.1"], "test": ["1", "2"]}.items():
        (tmp_path / "root" / split).mkdir(parents=True)
        for k, n in enumerate(names):
            (tmp_path / "root" / split / f"{n}.jpg").write_bytes(_jpeg(_smooth_image(10 + k + len(split))))
    r = survey.explore_folder(tmp_path / "root", workers=1, progress=False)
    assert sorted(it.id for it in r.items) == ["test/1", "test/2", "train/cat.1", "train/dog.1"]
    assert r.counts == {"cat": 1, "dog": 1, "unlabeled": 2, "other": 0, "total": 4}
    r2 = survey.explore_folder([tmp_path / "root" / "train", tmp_path / "root" / "test"], workers=1,
                                progress=False)
    assert sorted(it.id for it in r2.items) == ["test/1", "test/2", "train/cat.1", "train/dog.1"]
    assert set(r2.counts_by_source) == {str(tmp_path / "root" / "train"), str(tmp_path / "root" / "test")}


# --------------------------------------------------------------------------- report and CLI


def test_write_report(result, tmp_path):
    paths = survey.write_report(result, tmp_path / "rep")
    for key in ("summary", "scatter", "filesize", "aspect", "index"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    for key in ("scatter", "filesize", "aspect"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and im.width >= 600
    summary = json.loads(paths["summary"].read_text())
    assert summary["counts"] == result.counts
    assert {frozenset(g["ids"]) for g in summary["duplicates"]} == set(_group_sets(result.duplicates))
    assert len(summary["near_duplicates"]) == 2
    assert {u["id"] for u in summary["undecodable"]} == {"cat.9000", "dog.9001", "503", "notes"}
    assert set(summary["stats"]) == {"cat", "dog", "unlabeled", "all"}
    page = paths["index"].read_text()
    for needle in ("sizes_scatter.png", "filesize_hist.png", "summary.json", "dog.2001", "dog.3002",
                   "labels disagree", "truncated", "data:image/jpeg;base64,"):
        assert needle in page, needle


def test_cli(folder, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "catdog_tf.explore", f"--images={folder}", f"--out={out}", "--workers=1",
         "--near_dup_threshold=0", "--noprogress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "exact duplicate groups: 2 (1 with cat/dog labels disagreeing)" in proc.stdout
    assert "undecodable: 4" in proc.stdout
    assert "near-duplicate groups (pHash <= 0): 2 " in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["total"] == 21
    assert summary["params"]["near_dup_threshold"] == 0
    bad = subprocess.run([sys.executable, "-m", "catdog_tf.explore", f"--out={out}"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--images" in (bad.stderr + bad.stdout)


# --------------------------------------------------------------------------- records


def _write_records(folder: Path, examples: list[tuple], shards: int = 2, prefix: str = "train") -> list[str]:
    """examples: (id, label, encoded bytes[, (declared width, height)]), or raw bytes for a record
    that is not an Example. Returns the shard file names."""
    # Imported here, not at the top: TensorFlow in this process would make the pool tests spawn
    # instead of fork (see scan._pool_map), unlike a real --images run.
    import tensorflow as tf

    from catdog_tf.data import schema

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    writers = [tf.io.TFRecordWriter(str(folder / n)) for n in names]
    for k, ex in enumerate(examples):
        if isinstance(ex, bytes):
            writers[k % shards].write(ex)
            continue
        id_, label, data, *declared = ex
        try:
            w, h = declared[0] if declared else Image.open(io.BytesIO(data)).size
        except Exception:  # noqa: BLE001 - a bad image still gets a record
            w = h = 0
        writers[k % shards].write(schema.encode(encoded=data, id=id_, label=label, height=h, width=w, fold=-1))
    for w in writers:
        w.close()
    return names


def test_explore_records(tmp_path):
    a, b = _jpeg(_smooth_image(1)), _jpeg(_smooth_image(2))
    dog1 = _real("dog.1.jpg")
    examples = [("cat.1", 0, a), ("dog.7", 1, a), ("cat.2", 0, b), ("dog.1", 1, dog1),
                ("dog.2", 1, _jpeg(Image.open(io.BytesIO(dog1)), quality=30)), ("5", -1, b"\xff\xd8junk"),
                ("6", -1, _jpeg(_smooth_image(3))), ("8", -1, _jpeg(_smooth_image(4)), (10, 20))]
    _write_records(tmp_path / "rec", examples)
    r = survey.explore_records(tmp_path / "rec", workers=1, progress=False)
    assert r.counts == {"cat": 2, "dog": 3, "unlabeled": 3, "other": 0, "total": 8}
    assert _group_sets(r.duplicates) == [frozenset({"cat.1", "dog.7"})]
    assert r.duplicates[0]["label_conflict"]
    assert frozenset({"dog.1", "dog.2"}) in _group_sets(r.near_duplicates)
    assert [u["id"] for u in r.undecodable] == ["5"]
    assert r.undecodable[0]["path"].endswith(".tfrecord#2")  # 6th example -> shard 1, index 2
    assert r.stats["dog"]["n"]["count"] == 3
    assert r.summary()["warnings"] == [{"id": "8", "warning": "declared size 10x20 != decoded size 160x120"}]
    paths = survey.write_report(r, tmp_path / "rep")  # thumbnails re-read from the shards
    assert paths["index"].read_text().count("data:image/jpeg;base64,") >= 4


def test_records_from_manifest_and_bad_records(tmp_path):
    """Shards come from manifest.json (a stray shard it does not list is ignored); a record that
    is not an Example of the format is an undecodable row, not a crash."""
    rec = tmp_path / "rec"
    train = _write_records(rec, [("cat.1", 0, _jpeg(_smooth_image(1))), b"not an example",
                                 ("dog.1", 1, _jpeg(_smooth_image(2)))], shards=1)
    val = _write_records(rec, [("7", -1, _jpeg(_smooth_image(3)))], shards=1, prefix="validation")
    _write_records(rec, [("cat.99", 0, _jpeg(_smooth_image(4)))], shards=1, prefix="stale")
    def entry(name, count):
        data = (rec / name).read_bytes()
        return {"file": name, "count": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    manifest = {"splits": {"train": {"count": 3, "shards": [entry(n, 3) for n in train]},
                           "validation": {"count": 1, "shards": [entry(n, 1) for n in val]}}}
    (rec / "manifest.json").write_text(json.dumps(manifest))
    assert [os.path.basename(p) for p in survey.record_shards(rec)] == sorted(train + val)
    r = survey.explore_records(rec, workers=1, progress=False)
    assert sorted(it.id for it in r.items) == sorted(["cat.1", "dog.1", "7", f"{train[0]}#1"])
    assert r.counts == {"cat": 1, "dog": 1, "unlabeled": 1, "other": 1, "total": 4}
    [bad] = r.undecodable
    assert bad["id"] == f"{train[0]}#1" and bad["kind"] == "bad_record" and bad["path"].endswith(".tfrecord#1")
    assert "bad record" in bad["reason"]
    manifest["splits"]["train"]["shards"].append({"file": "gone.tfrecord", "count": 0, "bytes": 1, "sha256": "0"})
    (rec / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="gone.tfrecord.*missing"):
        survey.record_shards(rec)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catdog_tf.explore", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_tiny_synthetic_folder(tmp_path):
    for k, name in enumerate(["cat.1", "dog.1", "3"]):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{name}.jpg").write_bytes(_jpeg(_smooth_image(20 + k)))
    proc = _cli(f"--images={tmp_path / 'img'}", f"--out={tmp_path / 'rep'}", "--noprogress")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "index.html").is_file()
    assert "counts: cat 1, dog 1, unlabeled 1, other 0, total 3" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["--images=a", "--records=b"], "exactly one of --images"),
    (["--images=a", "--near_dup_threshold=65"], "--near_dup_threshold=65"),
    (["--images=a", "--workers=0"], "--workers=0"),
])
def test_cli_bad_flags_one_line_error(tmp_path, args, needle):
    proc = _cli(*args, f"--out={tmp_path / 'rep'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert not (tmp_path / "rep").exists()
