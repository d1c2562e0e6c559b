import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from catdog_tf.errors import UserError
from catdog_tf.data import manifest, shards, sources
from catdog_tf.files import sha256_file
from conftest import KAGGLE_NATIVE, REPO, jpeg_bytes, require
from catdog_tf.config import BuildConfig


def build(inputs, out, **kw):
    kw.setdefault("workers", 2)
    return shards.build([str(i) for i in inputs], BuildConfig(out=str(out), **kw))


def huge_png_header(w=100_000, h=100_000) -> bytes:
    """A PNG whose header claims huge dimensions (the pixel data is never needed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_round_trip_keeps_bytes_ids_labels(kaggle_dir, tmp_path):
    m = build([kaggle_dir], tmp_path / "rec", val_fraction=0.25)
    assert m["seen"] == 46 and m["written"] == 46 and m["skipped"] == []
    examples = list(manifest.read_examples(str(tmp_path / "rec")))
    ids = [e["id"] for e in examples]
    assert len(ids) == len(set(ids)) == 46
    for e in examples:
        if e["id"].startswith(("cat.", "dog.")):
            assert e["label"] == (1 if e["id"].startswith("dog.") else 0)
            src = kaggle_dir / "train" / f"{e['id']}.jpg"
        else:
            assert e["label"] == -1
            src = kaggle_dir / "test" / f"{e['id']}.jpg"
        assert e["encoded"] == src.read_bytes()  # original bytes, unchanged
        im = Image.open(src)
        assert (e["width"], e["height"]) == im.size
    s = m["splits"]
    assert (s["train"]["cat"], s["train"]["dog"], s["validation"]["cat"], s["validation"]["dog"]) == (15, 15, 5, 5)
    assert s["test"]["count"] == 6
    for split in s.values():  # checksums describe the files on disk
        for sh in split["shards"]:
            path = tmp_path / "rec" / sh["file"]
            assert path.stat().st_size == sh["bytes"]
            assert sha256_file(path) == sh["sha256"]


def test_split_is_reproducible_and_seeded(kaggle_dir, tmp_path):
    def val_ids(seed, out):
        build([kaggle_dir], tmp_path / out, seed=seed, val_fraction=0.25)
        return sorted(e["id"] for e in manifest.read_examples(str(tmp_path / out), "validation"))

    a, b, c = val_ids(1, "a"), val_ids(1, "b"), val_ids(2, "c")
    assert a == b
    assert a != c
    assert Counter(i.split(".")[0] for i in a) == {"cat": 5, "dog": 5}


def test_folds_assign_every_image_once(kaggle_dir, tmp_path):
    m = build([kaggle_dir / "train"], tmp_path / "rec", folds=4, seed=3)
    assert sorted(m["splits"]) == ["fold0", "fold1", "fold2", "fold3"]
    seen = {}
    for k in range(4):
        exs = list(manifest.read_examples(str(tmp_path / "rec"), f"fold{k}"))
        assert all(e["fold"] == k for e in exs)
        assert Counter(e["label"] for e in exs) == {0: 5, 1: 5}  # stratified
        for e in exs:
            assert e["id"] not in seen
            seen[e["id"]] = k
    assert len(seen) == 40
    # pipeline view: train = other folds, validation = this fold
    val = manifest.shard_files(str(tmp_path / "rec"), "validation", fold=2)
    train = manifest.shard_files(str(tmp_path / "rec"), "train", fold=2)
    assert all("fold2" in f for f in val) and not any("fold2" in f for f in train)
    with pytest.raises(sources.RecordsError, match="fold"):
        manifest.shard_files(str(tmp_path / "rec"), "train")
    joined = manifest.shard_files(str(tmp_path / "rec"), "fold0+fold3")
    assert joined == manifest.shard_files(str(tmp_path / "rec"), "fold0") + manifest.shard_files(str(tmp_path / "rec"), "fold3")
    # same seed -> same folds
    build([kaggle_dir / "train"], tmp_path / "rec2", folds=4, seed=3)
    again = {e["id"]: e["fold"] for e in manifest.read_examples(str(tmp_path / "rec2"))}
    assert again == seen


def test_exclusion_file(kaggle_dir, tmp_path):
    ex = tmp_path / "exclude.txt"
    ex.write_text("# reviewed outliers\ncat.3\ndog.5.jpg  # a logo\n\ncat.999\n")
    m = build([kaggle_dir], tmp_path / "rec", exclude=str(ex), folds=4)
    rec = str(tmp_path / "rec")
    # Kept out of TRAINING only: stored in their folds, so evaluation covers every photo.
    folds = {e["id"]: e["fold"] for e in manifest.read_examples(rec)}
    assert {"cat.3", "dog.5", "cat.4"} <= set(folds)
    assert m["excluded"] == manifest.excluded_ids(rec) == ["cat.3", "dog.5"]
    assert m["exclude_unmatched"] == ["cat.999"]
    assert m["seen"] == m["written"] + len(m["skipped"]) == 46 and not m["skipped"]
    k = folds["cat.3"]
    assert manifest.split_count(rec, f"fold{k}") == m["splits"][f"fold{k}"]["count"]
    assert manifest.split_count(rec, f"fold{k}", training=True) == m["splits"][f"fold{k}"]["count"] - \
        sum(folds[i] == k for i in ("cat.3", "dog.5"))
    # The folds are cut over every photo: the same as a build without the list.
    build([kaggle_dir], tmp_path / "rec_all", folds=4)
    assert {e["id"]: e["fold"] for e in manifest.read_examples(str(tmp_path / "rec_all"))} == folds


def test_bad_inputs_are_reported_or_converted(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    for i in range(4):
        (d / f"cat.{i}.jpg").write_bytes(jpeg_bytes(seed=i))
        (d / f"dog.{i}.jpg").write_bytes(jpeg_bytes(seed=10 + i))
    good = jpeg_bytes(h=64, w=64, seed=99)
    (d / "cat.10.jpg").write_bytes(b"")                                   # zero bytes
    (d / "cat.11.jpg").write_bytes(good[: len(good) // 2])                # truncated JPEG
    (d / "cat.12.jpg").write_bytes(jpeg_bytes(fmt="PNG"))                 # PNG named .jpg
    (d / "dog.13.jpg").write_bytes(jpeg_bytes(fmt="GIF", mode="P"))       # GIF named .jpg
    (d / "dog.14.jpg").write_bytes(jpeg_bytes(mode="CMYK"))               # CMYK JPEG
    (d / "dog.15.jpg").write_bytes(jpeg_bytes(mode="L"))                  # grayscale JPEG
    (d / "dog.16.jpg").write_bytes(b"%PDF-1.4 definitely not an image")   # non-image
    (d / "bird.17.jpg").write_bytes(jpeg_bytes())                         # no cat/dog prefix
    (d / "dog.18.jpg").symlink_to(tmp_path / "missing.jpg")               # unreadable
    (d / "cat.19.jpg").write_bytes(huge_png_header())                     # huge dimensions
    other = tmp_path / "more"
    other.mkdir()
    (other / "cat.0.jpg").write_bytes(jpeg_bytes(seed=50))                # same id twice
    m = build([d, other], tmp_path / "rec")
    reasons = {os.path.basename(s["file"]): s["reason"] for s in m["skipped"]}
    assert reasons.keys() == {"cat.10.jpg", "cat.11.jpg", "dog.16.jpg", "bird.17.jpg", "dog.18.jpg",
                              "cat.19.jpg", "cat.0.jpg"}
    assert "empty" in reasons["cat.10.jpg"]
    assert "truncated" in reasons["cat.11.jpg"]
    assert "not an image" in reasons["dog.16.jpg"]
    assert "prefix" in reasons["bird.17.jpg"]
    assert "cannot read" in reasons["dog.18.jpg"]
    assert "too large" in reasons["cat.19.jpg"]
    assert "duplicate id cat.0" in reasons["cat.0.jpg"] and str(d) in reasons["cat.0.jpg"]
    assert m["seen"] == 19 and m["written"] == 12 and m["seen"] == m["written"] + len(m["skipped"])
    converted = {c["id"]: c["reason"] for c in m["converted"]}
    assert set(converted) == {"cat.12", "dog.13", "dog.14"}  # grayscale JPEG decodes as-is: kept
    exs = {e["id"]: e for e in manifest.read_examples(str(tmp_path / "rec"))}
    assert exs["dog.15"]["encoded"] == (d / "dog.15.jpg").read_bytes()
    for i in ("cat.12", "dog.13", "dog.14", "dog.15"):  # everything written decodes as RGB JPEG
        img = tf.io.decode_jpeg(exs[i]["encoded"], channels=3).numpy()
        assert img.shape == (24, 32, 3)
    # CMYK converted the way a browser shows it: colors close to the RGB original
    rgb = np.asarray(Image.open(io.BytesIO(jpeg_bytes(seed=0))).convert("RGB"), np.float32)
    cmyk = tf.io.decode_jpeg(exs["dog.14"]["encoded"], channels=3).numpy().astype(np.float32)
    assert np.abs(cmyk - rgb).mean() < 40


def test_strict_and_console_report(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "cat.1.jpg").write_bytes(jpeg_bytes())
    (d / "dog.1.jpg").write_bytes(jpeg_bytes(seed=1))
    (d / "dog.2.jpg").write_bytes(b"")
    cmd = [sys.executable, "-m", "catdog_tf.records", f"--input={d}", f"--out={tmp_path / 'rec'}"]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "dog.2.jpg" in ok.stderr and "empty" in ok.stderr
    strict = subprocess.run(cmd + ["--strict"], cwd=REPO, capture_output=True, text=True)
    assert strict.returncode != 0 and "--strict" in strict.stderr
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert {"seen", "written", "skipped"} <= manifest.keys()
    assert manifest["skipped"][0]["file"].endswith("dog.2.jpg")


def test_zip_input_matches_folder(kaggle_dir, tmp_path):
    z = tmp_path / "kaggle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(kaggle_dir.rglob("*.jpg")):
            zf.write(p, p.relative_to(kaggle_dir.parent))
    a = build([kaggle_dir], tmp_path / "a", seed=5)
    b = build([z], tmp_path / "b", seed=5)
    assert a["written"] == b["written"] == 46
    ea = {e["id"]: e["encoded"] for e in manifest.read_examples(str(tmp_path / "a"))}
    eb = {e["id"]: e["encoded"] for e in manifest.read_examples(str(tmp_path / "b"))}
    assert ea == eb
    assert {k: v["count"] for k, v in a["splits"].items()} == {k: v["count"] for k, v in b["splits"].items()}


def test_interrupted_build_leaves_no_half_shard_and_resumes(kaggle_dir, tmp_path, monkeypatch):
    out = tmp_path / "rec"
    real = shards._write_shard
    calls = []

    def dying(path, items, *a):
        calls.append(path)
        if len(calls) > 2:
            # die half-way through writing: a temp file with partial content exists
            p = Path(path)  # a str: records writes through catdog_tf.files (gfile paths)
            p.with_name(f".{p.name}.tmp-dead").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(path, items, *a)

    monkeypatch.setattr(shards, "_write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        build([kaggle_dir], out, min_shards=4, workers=1)
    assert not (out / "manifest.json").exists()
    finished = sorted(p.name for p in out.glob("*.tfrecord"))
    assert len(finished) == 2  # only complete shards carry the reader-visible name
    monkeypatch.setattr(shards, "_write_shard", real)
    m = build([kaggle_dir], out, min_shards=4, workers=1)
    assert m["written"] == 46
    assert len(list(manifest.read_examples(str(out)))) == 46
    assert not list(out.glob(".*.tmp-*"))  # leftovers of the dead run are gone
    # a clean build gives identical shards
    m2 = build([kaggle_dir], tmp_path / "clean", min_shards=4, workers=1)
    assert [s["sha256"] for v in m["splits"].values() for s in v["shards"]] == \
           [s["sha256"] for v in m2["splits"].values() for s in v["shards"]]


def test_max_side_downscales(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "cat.1.jpg").write_bytes(jpeg_bytes(h=300, w=500))
    (d / "dog.1.jpg").write_bytes(jpeg_bytes(h=100, w=80))
    build([d], tmp_path / "rec", max_side=250, val_fraction=0.0)
    exs = {e["id"]: e for e in manifest.read_examples(str(tmp_path / "rec"))}
    assert (exs["cat.1"]["height"], exs["cat.1"]["width"]) == (150, 250)
    assert tf.io.decode_jpeg(exs["cat.1"]["encoded"]).shape == (150, 250, 3)
    assert exs["dog.1"]["encoded"] == (d / "dog.1.jpg").read_bytes()  # small: untouched


def test_tfds_source_offline_fails_clearly(tmp_path):
    with pytest.raises(sources.RecordsError, match="--input=FOLDER"):
        sources.tfds_candidates(str(tmp_path / "tfds"))


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(sources.RecordsError, match="does not exist"):
        build([tmp_path / "nope"], tmp_path / "rec")


def test_rebuilds_write_identical_shards(kaggle_dir, tmp_path):
    """Same photos, same settings, two processes: byte-identical shards, so feature caches keyed on
    shard checksums survive a rebuild (protobuf map order would otherwise vary per process)."""
    shas = []
    for k in range(2):
        out = tmp_path / f"rec{k}"
        r = subprocess.run([sys.executable, "-m", "catdog_tf.records", f"--input={kaggle_dir}", f"--out={out}",
                            "--folds=3"], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        m = json.loads((out / "manifest.json").read_text())
        shas.append(sorted((sh["file"], sh["sha256"]) for s in m["splits"].values() for sh in s["shards"]))
    assert shas[0] == shas[1]


def test_trainers_skip_excluded_photos_and_evaluation_keeps_them(kaggle_dir, tmp_path):
    from catdog_tf.data import pipeline
    from catdog_tf.training.features import FeatureSet
    ex = tmp_path / "exclude.txt"
    ex.write_text("cat.3\ndog.5\n")
    build([kaggle_dir / "train"], tmp_path / "rec", exclude=str(ex), folds=2)
    rec = str(tmp_path / "rec")

    def ids(**kw):
        ds = pipeline.make_dataset(rec, "fold0+fold1", 16, 8, pipeline.Read(with_ids=True, seed=0, **kw))
        return sorted(i.decode() for x, _ in ds for i in x["id"].numpy())

    every = ids()
    assert len(every) == 40 and {"cat.3", "dog.5"} <= set(every)
    assert ids(training=True) == sorted(set(every) - {"cat.3", "dog.5"})
    assert ids(training=True, skip_excluded=False) == every
    assert ids(skip_excluded=True) == ids(training=True)
    fs = FeatureSet(np.arange(4.0)[:, None], np.zeros(4), np.asarray(["cat.3", "cat.4", "dog.5", "dog.6"], object),
                    np.arange(4.0)[:, None] + 10)
    kept = fs.without(manifest.excluded_ids(rec))
    assert list(kept.ids) == ["cat.4", "dog.6"] and kept.x[:, 0].tolist() == [1, 3] and kept.x_flip[:, 0].tolist() == [11, 13]


def test_content_fingerprint_follows_shards_and_exclusions_not_build_time(kaggle_dir, tmp_path):
    ex = tmp_path / "exclude.txt"
    ex.write_text("cat.3\n")
    build([kaggle_dir / "train"], tmp_path / "a", exclude=str(ex), folds=2)
    build([kaggle_dir / "train"], tmp_path / "b", exclude=str(ex), folds=2)  # another build time, same content
    ex.write_text("cat.3\ndog.4\n")
    build([kaggle_dir / "train"], tmp_path / "c", exclude=str(ex), folds=2)
    fa, fb, fc = (manifest.content_fingerprint(str(tmp_path / k)) for k in "abc")
    assert fa == fb != fc
    assert manifest.split_shards(str(tmp_path / "a"), "fold0") == manifest.split_shards(str(tmp_path / "c"), "fold0")


def test_store_size_stores_every_photo_at_that_size(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    native = require(KAGGLE_NATIVE / "train")
    (d / "cat.1.jpg").symlink_to(native / "cat.1.jpg")  # real photos: 280 x 300, both sides shrink
    (d / "dog.1.jpg").symlink_to(native / "dog.2.jpg")
    Image.new("RGB", (150, 90), (200, 10, 30)).save(d / "dog.2.jpg", "PNG")  # PNG content, grows
    m = build([d], tmp_path / "rec", store_size=224, val_fraction=0.0)
    assert m["store_size"] == 224 and manifest.stored_size(str(tmp_path / "rec")) == 224
    assert [c["id"] for c in m["converted"]] == ["dog.2"]  # the PNG: the list keeps only real conversions
    for e in manifest.read_examples(str(tmp_path / "rec")):
        assert (e["height"], e["width"]) == (224, 224)
        with Image.open(io.BytesIO(e["encoded"])) as im:
            assert im.format == "JPEG" and im.size == (224, 224)
            assert im.layer == [(1, 1, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]  # 4:4:4, chroma at full resolution
        with Image.open(d / f"{e['id']}.jpg") as src:
            ref = np.asarray(src.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
        got = tf.io.decode_jpeg(e["encoded"], dct_method="INTEGER_ACCURATE").numpy().astype(np.float32)
        assert np.abs(got - ref).mean() < 1.5, e["id"]  # squashed, antialiased: a wrong geometry is off by tens
    build([d], tmp_path / "plain", val_fraction=0.0)
    assert manifest.stored_size(str(tmp_path / "plain")) is None


def test_store_size_with_max_side_is_refused(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "cat.1.jpg").write_bytes(jpeg_bytes(h=30, w=30))
    # Refused when the settings are made (config.BuildConfig.relations), before any build.
    with pytest.raises(UserError, match="--store_size and --max_side exclude each other"):
        build([d], tmp_path / "rec", store_size=64, max_side=100)
    with pytest.raises(UserError, match="--store_size=0: must be >= 1"):
        build([d], tmp_path / "rec", store_size=0)
    with pytest.raises(UserError, match="--store_size=20000: must be at most 7071"):
        build([d], tmp_path / "rec", store_size=20_000)
    assert not (tmp_path / "rec").exists()
