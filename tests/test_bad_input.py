"""Bad input and misuse, one class of failure per test (issue 13): nothing hangs, nothing is
lost or mixed, every user error is one line. Every input here is made by the test."""

import fcntl
import io
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from catdog_tf.config import BuildConfig
from catdog_tf.data import manifest, pipeline, shards, sources
from catdog_tf.inference import predictor
from conftest import REPO, jpeg_bytes


def build(inputs, out, **kw):
    return shards.build([str(i) for i in inputs], BuildConfig(**{"out": str(out), "workers": 2, **kw}))


def labeled_folder(d, n=6, start=0):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (d / f"cat.{i}.jpg").write_bytes(jpeg_bytes(seed=i))
        (d / f"dog.{i}.jpg").write_bytes(jpeg_bytes(seed=100 + i))
    return d


def cli(tool, *args, timeout=300):
    r = subprocess.run([sys.executable, "-m", f"catdog_tf.{tool}", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    return r


def one_line_error(r, *needles):
    """A user error: non-zero exit, no traceback, one `error:` line that says what is wrong."""
    assert r.returncode != 0, r.stdout[-500:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def manifest_json(out):
    return json.loads((out / "manifest.json").read_text())


# ------------------------------------------------------------------ data loss or silently wrong data


def test_failed_rebuild_leaves_the_old_build_whole(tmp_path, monkeypatch):
    photos = labeled_folder(tmp_path / "p", n=20)
    out = tmp_path / "rec"
    old = build([photos], out)
    old_examples = sorted(e["id"] for e in manifest.read_examples(str(out)))
    real = shards._write_shard
    calls = []

    def fail_after_one(path, *a, **kw):  # a disk that fills up after the first new shard
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(path, *a, **kw)

    monkeypatch.setattr(shards, "_write_shard", fail_after_one)
    with pytest.raises(OSError, match="No space"):
        build([photos], out, folds=3, workers=1)  # another build into the same folder
    monkeypatch.undo()
    assert manifest_json(out) == old  # the old manifest, and every shard it lists, untouched
    assert sorted(e["id"] for e in manifest.read_examples(str(out))) == old_examples
    assert len(manifest.shard_files(str(out), "train")) == len(old["splits"]["train"]["shards"])
    again = build([photos], out, folds=3)  # the rebuild then succeeds and the old shards go
    listed = {sh["file"] for s in again["splits"].values() for sh in s["shards"]}
    assert {p.name for p in out.glob("*.tfrecord")} == listed


def test_readers_refuse_a_shard_that_does_not_match_the_manifest(tmp_path):
    out = tmp_path / "rec"
    m = build([labeled_folder(tmp_path / "p")], out)
    shard = out / m["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(sources.RecordsError, match="manifest says"):
        pipeline.make_dataset(str(out), "train", 32, 4)
    shard.unlink()
    with pytest.raises(sources.RecordsError, match="missing"):
        list(manifest.read_examples(str(out)))


def test_only_the_previous_builds_shards_are_removed(tmp_path, capsys):
    out = tmp_path / "rec"
    out.mkdir()
    foreign = out / "mine.tfrecord"
    foreign.write_bytes(b"someone else's data")
    build([labeled_folder(tmp_path / "p")], out)
    build([labeled_folder(tmp_path / "p")], out, val_fraction=0.5)
    assert foreign.read_bytes() == b"someone else's data"
    assert "mine.tfrecord: not written by a build here; left alone" in capsys.readouterr().err
    listed = {sh["file"] for s in manifest_json(out)["splits"].values() for sh in s["shards"]}
    assert {p.name for p in out.glob("*.tfrecord")} == listed | {"mine.tfrecord"}


def _png(im):
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _exif_cmyk_jpeg():
    im = Image.new("CMYK", (40, 20), (0, 200, 200, 0))  # red, wider than tall
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: shown 20 wide, 40 tall
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_any_pillow_image_is_stored_faithfully_and_predict_sees_the_same_pixels(tmp_path):
    d = tmp_path / "p"
    labeled_folder(d, n=2)
    gray16 = np.full((24, 32), 30000, np.uint16)
    (d / "cat.10.png").write_bytes(_png(Image.fromarray(gray16)))  # 16-bit: mid gray, not white
    pal = Image.new("P", (32, 24), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 1  # every pixel transparent
    (d / "cat.11.png").write_bytes(_png(pal))
    (d / "dog.12.png").write_bytes(_png(Image.new("LA", (32, 24), (50, 0))))  # transparent gray
    (d / "dog.13.jpg").write_bytes(_exif_cmyk_jpeg())
    out = tmp_path / "rec"
    build([d], out, val_fraction=0.0)
    stored = {e["id"]: e for e in manifest.read_examples(str(out))}
    for id_, expect in {"cat.10": 30000 / 257, "cat.11": 255, "dog.12": 255}.items():
        px = np.asarray(Image.open(io.BytesIO(stored[id_]["encoded"])).convert("RGB"), np.float64)
        assert abs(px.mean() - expect) < 3, (id_, px.mean())  # transparency on white, 16 bits scaled
    rot = stored["dog.13"]
    assert (rot["height"], rot["width"]) == (40, 20) == Image.open(io.BytesIO(rot["encoded"])).size[::-1]
    red = np.asarray(Image.open(io.BytesIO(rot["encoded"])).convert("RGB"), np.float64).mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 60
    # predict reads the files and gets exactly the records' pixels
    names = ["cat.10.png", "cat.11.png", "dog.12.png", "dog.13.jpg"]
    from_files = np.concatenate(list(pipeline.files_dataset([str(d / n) for n in names], 48, 8)))
    ds = pipeline.make_dataset(str(out), "train", 48, 64, pipeline.Read(with_ids=True))
    by_id = {i.decode(): x for xs, _ in ds for i, x in zip(xs["id"].numpy(), xs["image"].numpy())}
    for n, x in zip(names, from_files):
        np.testing.assert_array_equal(x, by_id[n.rsplit(".", 1)[0]])


def test_two_builds_into_one_folder_at_once_are_refused(tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    with open(out / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another build holds the folder
        with pytest.raises(sources.RecordsError, match="another build is writing"):
            build([labeled_folder(tmp_path / "p")], out)
    build([labeled_folder(tmp_path / "p")], out)  # free again


def test_duplicate_ids_and_stray_files_when_scoring_a_folder(tmp_path):
    d = labeled_folder(tmp_path / "p", n=3)
    (d / "cat.1.png").write_bytes(jpeg_bytes(seed=50, fmt="PNG"))  # the same id twice
    (d / "dog.2.jpg.bak").write_bytes(jpeg_bytes(seed=51))  # a backup copy: not a photo name
    photos = predictor.scan_folder(str(d), labeled=True)
    assert sorted(photos.ids) == sorted(f"{c}.{i}" for c in ("cat", "dog") for i in range(3))
    reasons = {os.path.basename(s["file"]): s["reason"] for s in photos.skipped}
    assert "duplicate id cat.1" in reasons["cat.1.png"] and "suffix .bak" in reasons["dog.2.jpg.bak"]
    assert photos.describe() == f"6 photo(s) scored from {d}, 2 file(s) skipped"
    t = tmp_path / "test"
    t.mkdir()
    for i in (1, 2):
        (t / f"{i}.jpg").write_bytes(jpeg_bytes(seed=i))
    (t / "1.jpg.bak").write_bytes(b"old")
    (t / "cat.5.jpg").write_bytes(jpeg_bytes(seed=5))  # a stray training photo is no test id
    tphotos = predictor.scan_folder(str(t), labeled=False)
    assert tphotos.ids == ["1", "2"] and tphotos.missing_ids() == []  # the .bak costs no row


# ------------------------------------------------------------------ hangs and unbounded memory


def test_fifos_devices_and_zip_bombs_are_skipped_not_read(tmp_path):
    d = labeled_folder(tmp_path / "p", n=3)
    os.mkfifo(d / "cat.7.jpg")  # reading this would block forever
    (d / "dog.8.jpg").symlink_to("/dev/zero")  # reading this would never end
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/cat.9.jpg", b"\0" * (64 * 2**20))  # 64 MB from ~64 KB
        z.writestr("train/dog.9.jpg", jpeg_bytes(seed=9))
    result = {}
    t = threading.Thread(target=lambda: result.update(m=build([d, bomb], tmp_path / "rec", max_file_mb=1)))
    t.start()
    t.join(120)
    assert not t.is_alive(), "the build hangs"
    reasons = {os.path.basename(s["file"].split(":")[-1]): s["reason"] for s in result["m"]["skipped"]}
    assert "FIFO" in reasons["cat.7.jpg"] and "character device" in reasons["dog.8.jpg"]
    assert "too large" in reasons["cat.9.jpg"]
    assert result["m"]["written"] == 7 and result["m"]["seen"] == 7 + len(result["m"]["skipped"])


# ------------------------------------------------------------------ silently empty or wrong runs


def test_subfolders_backslash_zips_and_a_stray_labeled_photo_in_test(tmp_path):
    root = tmp_path / "kaggle"
    labeled_folder(root / "train" / "cats", n=3)
    (root / "test").mkdir()
    for i in range(1, 5):
        (root / "test" / f"{i}.jpg").write_bytes(jpeg_bytes(seed=i))
    (root / "test" / "cat.99.jpg").write_bytes(jpeg_bytes(seed=99))  # one stray labeled photo
    m = build([root], tmp_path / "rec")
    assert m["splits"]["test"]["count"] == 4 and m["written"] == 10
    stray = [s for s in m["skipped"] if s["file"].endswith("cat.99.jpg")]
    assert len(stray) == 1 and "labeled name in an unlabeled (test) folder" in stray[0]["reason"]
    z = tmp_path / "win.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i in range(3):
            f.writestr(zipfile.ZipInfo(f"train\\cat.{i}.jpg"), jpeg_bytes(seed=i))
            f.writestr(zipfile.ZipInfo(f"train\\dog.{i}.jpg"), jpeg_bytes(seed=10 + i))
    assert build([z], tmp_path / "rec2")["written"] == 6


def test_a_build_that_writes_no_labeled_photo_fails(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "cat.1.jpg").write_bytes(b"")
    with pytest.raises(sources.RecordsError, match="all 1 labeled photos were skipped"):
        build([d], tmp_path / "rec")
    (d / "cat.1.jpg").unlink()
    with pytest.raises(sources.RecordsError, match="no labeled photo"):
        build([d], tmp_path / "rec")
    assert not (tmp_path / "rec" / "manifest.json").exists()


def test_a_damaged_or_encrypted_zip_member_is_skipped(tmp_path):
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        for i in range(4):
            f.writestr(f"cat.{i}.jpg", jpeg_bytes(seed=i))
            f.writestr(f"dog.{i}.jpg", jpeg_bytes(seed=10 + i))
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as f:
        info = f.getinfo("cat.1.jpg")
        enc = f.getinfo("dog.2.jpg")
    start = info.header_offset + 30 + len(info.filename)
    data[start + 20] ^= 0xFF  # corrupt the compressed bytes: a deflate or CRC error
    data[enc.header_offset + 6] |= 0x1  # mark a member encrypted: in its local header ...
    central = [pos for pos in range(len(data) - 55)
               if data[pos:pos + 4] == b"PK\x01\x02" and data[pos + 46:pos + 55] == b"dog.2.jpg"]
    assert len(central) == 1
    data[central[0] + 8] |= 0x1  # ... and in the central directory
    z.write_bytes(bytes(data))
    m = build([z], tmp_path / "rec")
    reasons = {s["file"].split(":")[-1]: s["reason"] for s in m["skipped"]}
    assert "damaged zip member" in reasons["cat.1.jpg"] and "encrypted" in reasons["dog.2.jpg"]
    assert m["written"] == 6


def test_predict_never_writes_a_submission_with_a_missing_row(tmp_path):
    model = tmp_path / "m.keras"
    _tiny_model().save(model)
    t = tmp_path / "test"
    t.mkdir()
    for i in (1, 2):
        (t / f"{i}.jpg").write_bytes(jpeg_bytes(seed=i))
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(t / "3.jpg", "TIFF")  # TIFF named .jpg
    ok = cli("predict", f"--model={model}", f"--images={t}", f"--out={tmp_path / 's.csv'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "s.csv").read_text().splitlines()[1:] != [] and len((tmp_path / "s.csv").read_text().split()) == 4
    os.mkfifo(t / "4.jpg")
    (t / "5.jpg").mkdir()
    bad = cli("predict", f"--model={model}", f"--images={t}", f"--out={tmp_path / 'b.csv'}", timeout=120)
    one_line_error(bad, "2 test id(s)", "4, 5", "nothing written")
    assert not (tmp_path / "b.csv").exists()


def test_predict_pixel_limit_can_be_raised(tmp_path):
    model = tmp_path / "m.keras"
    _tiny_model().save(model)
    t = tmp_path / "test"
    t.mkdir()
    Image.new("RGB", (8000, 8000), (120, 80, 40)).save(t / "1.jpg", quality=80)  # a real 64 MP photo
    (t / "2.jpg").write_bytes(jpeg_bytes(seed=2))
    assert cli("predict", f"--model={model}", f"--images={t}", f"--out={tmp_path / 'a.csv'}").returncode == 0
    low = cli("predict", f"--model={model}", f"--images={t}", f"--out={tmp_path / 'b.csv'}", "--max_pixels=1000000")
    one_line_error(low, "1 test id(s)")
    assert "8000x8000 pixels exceeds the 1000000 pixel limit" in low.stderr


def _tiny_model():
    import keras

    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(inp / 255.0))
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    d = tmp_path_factory.mktemp("trainrec")
    build([labeled_folder(d / "p", n=10)], d / "rec")
    return d / "rec"


def test_train_refuses_a_missing_split_or_fold(rec, tmp_path):
    one_line_error(cli("train", f"--records={rec}", "--val_split=validaton", f"--out={tmp_path / 'a'}"),
                   "no split 'validaton'")
    one_line_error(cli("train", f"--records={rec}", "--fold=7", f"--out={tmp_path / 'b'}"))
    one_line_error(cli("train", f"--records={rec}", "--backbone=efficientnet_lite9", f"--out={tmp_path / 'c'}"),
                   "unknown backbone 'efficientnet_lite9'")


def test_train_rerun_after_a_records_rebuild_is_not_called_finished(rec, tmp_path):
    from catdog_tf.config import TrainConfig
    from catdog_tf.training import two_stage

    cfg = TrainConfig(records=str(rec), out=str(tmp_path / "t"))
    identity = two_stage._identity(cfg)
    (tmp_path / "t").mkdir()
    for f in ("model.keras", "metrics.json"):
        (tmp_path / "t" / f).write_text("{}")
    (tmp_path / "t" / "flags.json").write_text(json.dumps(identity))
    assert two_stage._finished(tmp_path / "t", two_stage._identity(cfg)) == {}
    build([labeled_folder(tmp_path / "p2", n=10, start=50)], rec)  # same folder, other photos
    assert two_stage._finished(tmp_path / "t", two_stage._identity(cfg)) is None


# ------------------------------------------------------------------ unclear messages


@pytest.mark.parametrize("tool", ["evaluate", "predict", "outliers"])
def test_an_empty_or_unnamed_folder_is_one_line(tool, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "photo.jpg").write_bytes(jpeg_bytes())
    args = [f"--images={d}"] + ([f"--model={tmp_path / 'm.keras'}"] if tool != "outliers" else [])
    if tool != "outliers":
        _tiny_model().save(tmp_path / "m.keras")
    one_line_error(cli(tool, *args, f"--out={tmp_path / 'o'}"), "no readable photo named")


def test_records_user_errors_are_one_line(tmp_path):
    d = labeled_folder(tmp_path / "p", n=2)
    (tmp_path / "file").write_text("x")
    one_line_error(cli("records", f"--input={d}", f"--out={tmp_path / 'file'}"), "file")
    trunc = tmp_path / "t.zip"
    with zipfile.ZipFile(trunc, "w") as f:
        f.writestr("cat.1.jpg", jpeg_bytes())
    trunc.write_bytes(trunc.read_bytes()[:40])
    one_line_error(cli("records", f"--input={trunc}", f"--out={tmp_path / 'r'}"), "truncated or damaged")
    (d / "cat.x.jpg").write_bytes(jpeg_bytes())
    m = build([d], tmp_path / "r2")
    reason = [s["reason"] for s in m["skipped"] if s["file"].endswith("cat.x.jpg")][0]
    assert "number missing after the cat./dog. prefix" in reason


def test_shard_write_failure_is_one_line(tmp_path):
    """A file-size limit hit while writing a shard (like a full disk): one line, exit non-zero."""
    d = labeled_folder(tmp_path / "p", n=4)
    code = ("import resource, sys, runpy\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
            f"sys.argv = ['catdog_tf.records', '--input={d}', '--out={tmp_path / 'r'}']\n"
            "runpy.run_module('catdog_tf.records', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    one_line_error(r, "cannot write")
    assert not (tmp_path / "r" / "manifest.json").exists()


@pytest.mark.parametrize("tool, args, needle", [
    ("kfold", ["--records={tmp}/none"], "no manifest"),
    ("ensemble", ["--oof", "--member={tmp}/nothing", "--out={tmp}/e"], "nothing"),
    ("ensemble", [], "give --member"),
    ("export", ["--model={tmp}/none.keras", "--out={tmp}/x"], "no model"),
    ("backbones", ["--classify"], "needs photo paths"),
    ("evaluate", ["--model={tmp}/none.keras", "--images={tmp}", "--records={tmp}"], "exactly one of"),
    ("records", ["--input={tmp}/missing"], "does not exist"),
    ("train", ["--records={tmp}/none"], "no manifest"),
])
def test_every_tool_turns_a_user_error_into_one_line(tool, args, needle, tmp_path):
    one_line_error(cli(tool, *[a.format(tmp=tmp_path) for a in args]), needle)
