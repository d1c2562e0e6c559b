"""Every tool reads and writes through tf.io.gfile: records, runs, caches, models and reports on
TF's in-memory `ram://` filesystem (what gs:// or hdfs:// would be), in this one process."""

import io
import json
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from catdog_tf import files, plots
from catdog_tf.data import manifest, pipeline, shards, sources
from conftest import jpeg_bytes
from conftest import tiny_classifier as tiny
from catdog_tf.config import BuildConfig


@pytest.fixture(autouse=True)
def no_local_ram_folder():
    """pathlib folds 'ram://x' into the LOCAL relative path 'ram:/x': code that still used it
    would write (and read back) a folder 'ram:' here, and look as if it worked."""
    from pathlib import Path

    yield
    assert not Path("ram:").exists(), "a ram:// path was written to the local disk (pathlib or os on a URL)"


def ram(name: str = "") -> str:
    """A fresh ram:// folder (ram:// is one tree per process: every test takes its own prefix)."""
    return f"ram://{uuid.uuid4().hex}/{name}".rstrip("/")


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        im.load()  # the whole image decodes, not just its header
        return im.size


def copy_to(local_root, remote_root: str) -> None:
    for p in sorted(local_root.rglob("*")):
        if p.is_file():
            files.write_bytes(files.join(remote_root, str(p.relative_to(local_root))), p.read_bytes())


def build(inputs, out, **kw):
    return shards.build([str(i) for i in inputs], BuildConfig(out=str(out), workers=2, **kw))


# --------------------------------------------------------------------------- catdog_tf.files


def test_files_round_trip_on_ram():
    root = ram("a")
    assert files.is_remote(root) and not files.is_remote("/tmp/x") and not files.exists(root)
    t = files.join(root, "sub", "t.txt")
    files.write_text(t, "héllo\n")  # parent folders made
    assert files.read_text(t) == "héllo\n" and files.read_bytes(t) == "héllo\n".encode()
    assert files.isdir(files.join(root, "sub")) and not files.isdir(t)
    assert files.name(t) == "t.txt" and files.parent(t) == files.join(root, "sub")
    files.write_bytes(t, b"\x00\x01")  # atomic overwrite: the new bytes, no temp file left behind
    assert files.read_bytes(t) == b"\x00\x01"
    assert files.listdir(files.join(root, "sub")) == ["t.txt"]
    with files.open(files.join(root, "sub", "s.bin"), "wb") as f:
        f.write(b"abc")
    assert files.glob(files.join(root, "sub", "*.bin")) == [files.join(root, "sub", "s.bin")]
    assert files.sha256_file(files.join(root, "sub", "s.bin")) == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    a = {"x": np.arange(6, dtype=np.float16).reshape(2, 3), "ids": np.asarray(["cat.1", "7"])}
    files.save_npz(files.join(root, "c.npz"), **a)
    b = files.load_npz(files.join(root, "c.npz"))
    assert set(b) == {"x", "ids"} and b["x"].dtype == np.float16
    np.testing.assert_array_equal(b["x"], a["x"])
    np.testing.assert_array_equal(b["ids"], a["ids"])
    assert files.listdir(root) == ["c.npz", "sub"]
    files.remove(files.join(root, "c.npz"))
    files.remove(files.join(root, "c.npz"))  # a missing file is no error
    files.rmtree(root)
    assert not files.exists(t) and not files.exists(root)


# --------------------------------------------------------------------------- records


def test_records_build_and_read_on_ram(kaggle_dir):
    out = ram("records")
    m = build([kaggle_dir], out, folds=3)
    assert m["seen"] == m["written"] == 46 and m["skipped"] == []
    assert manifest.load_manifest(out) == m
    names = files.listdir(out)
    assert "manifest.json" in names and ".lock" not in names  # the remote lock file is gone
    assert not [n for n in names if ".tmp" in n]
    shards = [sh for s in m["splits"].values() for sh in s["shards"]]
    assert sorted(n for n in names if n.endswith(".tfrecord")) == sorted(sh["file"] for sh in shards)
    for sh in shards:  # the manifest describes the bytes on ram://
        assert files.sha256_file(files.join(out, sh["file"])) == sh["sha256"]
    ex = {e["id"]: e for e in manifest.read_examples(out)}
    assert len(ex) == 46
    assert ex["cat.3"]["encoded"] == (kaggle_dir / "train" / "cat.3.jpg").read_bytes()
    assert ex["4"]["label"] == -1 and ex["dog.5"]["label"] == 1
    # the input pipeline reads every photo of a fold from ram://
    ds = pipeline.make_dataset(out, "fold0", 32, 8, pipeline.Read(with_ids=True))
    got = [i.decode() for x, _ in ds for i in x["id"].numpy()]
    assert sorted(got) == sorted(e["id"] for e in ex.values() if e["fold"] == 0)
    assert len(got) == m["splits"]["fold0"]["count"] > 0
    x, y = next(iter(pipeline.make_dataset(out, "fold0", 32, 8)))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8,)
    # a rebuild reuses every shard (their .done markers live on ram:// too)
    again = build([kaggle_dir], out, folds=3)
    assert again["splits"] == m["splits"]
    # a second build while one holds the lock is refused
    files.write_text(files.join(out, ".lock"), "pid 1 on elsewhere\n")
    with pytest.raises(sources.RecordsError, match="another build is writing.*pid 1 on elsewhere"):
        build([kaggle_dir], out, folds=3)


def test_records_from_a_ram_input_folder_match_the_local_folder(kaggle_dir, tmp_path):
    src = ram("kaggle")
    copy_to(kaggle_dir, src)
    files.write_bytes(files.join(src, "train", "notes.txt"), b"not a photo")
    files.write_bytes(files.join(src, "train", ".DS_Store"), b"hidden")
    files.write_bytes(files.join(src, ".git", "cat.99.jpg"), jpeg_bytes(seed=99))  # hidden folder: not data
    exclude = ram("exclude.txt")
    files.write_text(exclude, "cat.1  # a bad photo\ndog.2\n")
    local = build([kaggle_dir], tmp_path / "rec", folds=3, exclude=None)
    remote_out = ram("rec")
    remote = build([src], remote_out, folds=3, exclude=exclude)
    assert remote["written"] == local["written"] == 46
    assert remote["skipped"] == [{"file": files.join(src, "train", "notes.txt"),
                                  "reason": "not an image file name (suffix .txt; expected cat.N.jpg or dog.N.jpg)"}]
    assert remote["excluded"] == ["cat.1", "dog.2"] and remote["source"] == [src]
    local_ids = sorted(e["id"] for e in manifest.read_examples(str(tmp_path / "rec")))
    assert sorted(e["id"] for e in manifest.read_examples(remote_out)) == local_ids
    for split, s in local["splits"].items():  # the same photos in the same folds: the same shard bytes
        assert sorted(sh["sha256"] for sh in remote["splits"][split]["shards"]) == \
            sorted(sh["sha256"] for sh in s["shards"])
    with pytest.raises(sources.RecordsError, match="does not exist"):
        build([ram("nothing")], ram("rec2"))


# --------------------------------------------------------------------------- ensemble, export, plots


def test_ensemble_export_and_plots_on_ram(kaggle_dir, monkeypatch):
    from catdog_tf.inference import ensembling, predictor, serving

    root = ram()
    rec = files.join(root, "records")
    build([kaggle_dir], rec, val_fraction=0.5)
    members = []
    for k, (size, name) in enumerate([(32, "a"), (48, "b")]):
        path = files.join(root, "members", name, "model.keras")
        tiny(size, k, name).save(path)
        members.append(files.parent(path) if k else path)  # a model folder and a .keras file
    out = files.join(root, "ensemble")
    report = ensembling.run(members, rec, out, split="validation")
    assert report["count"] == 20 and np.isfinite(report["log_loss"])
    assert json.loads(files.read_text(files.join(out, "ensemble.json"))) == json.loads(json.dumps(report))
    assert files.exists(files.join(out, "saved_model", "saved_model.pb"))
    ids, y, p = predictor.predict_records(predictor.load_model(out), rec, "validation")  # the ensemble, reloaded
    assert len(ids) == 20 and np.all((p > 0) & (p < 1))

    # export of a tiny model: SavedModel, LiteRT and the standard-layer model.keras, all on ram://
    exp = files.join(root, "export")
    r = serving.export(members[0], exp)
    assert set(r["files"]) == {"model.keras", "saved_model", "model.tflite"}
    assert all(r["bytes"][f] > 0 for f in r["files"])
    assert r["bytes"]["model.tflite"] == len(files.read_bytes(files.join(exp, "model.tflite")))
    served = tf.saved_model.load(files.join(exp, "saved_model"))
    photo = (kaggle_dir / "train" / "dog.3.jpg").read_bytes()
    p_served = served.signatures["serving_default"](image_bytes=tf.constant([photo]))["p_dog"].numpy()
    p_keras = predictor.predict_files(predictor.load_model(members[0]), [str(kaggle_dir / "train" / "dog.3.jpg")])
    np.testing.assert_allclose(p_served, p_keras, atol=1e-4)
    measured = serving.measure(exp, rec, "validation")["measured"]["results"]
    assert measured["model.tflite"]["count"] == 20
    assert abs(measured["model.tflite"]["log_loss"] - measured["model.keras"]["log_loss"]) < 1e-4
    assert "measured" in json.loads(files.read_text(files.join(exp, "export.json")))

    # plots: PNG bytes written through gfile; a contact sheet of photos read from ram://
    y, p = np.asarray(y), np.asarray(p)
    cal = plots.calibration_plot(y, p, files.join(root, "plots", "calibration.png"), "tiny")
    assert png_size(files.read_bytes(cal))[0] > 500
    photos = ram("photos")
    copy_to(kaggle_dir / "train", photos)
    items = [(files.join(photos, f"cat.{i}.jpg"), f"cat.{i}") for i in range(4)] + [(photo, "bytes")]
    sheet = plots.contact_sheet(items, files.join(root, "plots", "sheet.png"), "sheet", cols=3)
    assert png_size(files.read_bytes(sheet)) == (round(3 * 2.6 * 80), round((2 * 3.0 + 0.6) * 80))

    # a worker that is not the chief writes nothing, says so, and returns
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1", "h:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert ensembling.run(members, rec, files.join(root, "ens2")) == {}
    assert ensembling.run_oof(members, files.join(root, "ens3")) == {}
    assert serving.export(members[0], files.join(root, "exp2")) == {}
    assert not any(files.exists(files.join(root, d)) for d in ("ens2", "ens3", "exp2"))


def test_explore_report_on_ram(kaggle_dir):
    from catdog_tf.tools import survey

    src = ram("kaggle")
    copy_to(kaggle_dir, src)
    result = survey.explore_folder(src, workers=1, progress=False)
    assert result.counts["cat"] == result.counts["dog"] == 20 and result.counts["unlabeled"] == 6
    out = ram("report")
    paths = survey.write_report(result, out)
    assert files.listdir(out) == ["aspect_hist.png", "filesize_hist.png", "index.html", "sizes_scatter.png",
                                  "summary.json"]
    for key in ("scatter", "filesize", "aspect"):
        assert png_size(files.read_bytes(paths[key]))[0] >= 600
    assert json.loads(files.read_text(paths["summary"]))["counts"] == result.counts
    assert "data:image/jpeg;base64," in files.read_text(paths["index"])  # thumbnails read from ram://


# --------------------------------------------------------------------------- training


def test_loop_backup_and_resume_on_ram():
    """The multi-worker loop's backups (weights, optimizer npz, state.json) on ram://, resumed."""
    from catdog_tf.training import loop
    from catdog_tf.training.recipe import FitConfig

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    backup = ram("backup")
    strategy = tf.distribute.get_strategy()
    h = loop.fit(model, strategy, ds, ds, FitConfig(epochs=2, lr=0.01, batch_size=16), decay_steps=8, backup_dir=backup,
                 log=lambda m: None)
    assert h.epoch == [0, 1]
    assert files.listdir(backup) == ["best.weights.h5", "latest.weights.h5", "optimizer.npz", "state.json"]
    assert json.loads(files.read_text(files.join(backup, "state.json")))["epoch"] == 2
    said = []
    h = loop.fit(model, strategy, ds, ds, FitConfig(epochs=3, lr=0.01, batch_size=16), decay_steps=12, backup_dir=backup,
                 log=said.append)
    assert h.epoch == [2] and said[0] == "restored backup: resuming after epoch 2"


def test_train_with_records_out_and_caches_on_ram(kaggle_dir, monkeypatch):
    from catdog_tf.config import TrainConfig
    from catdog_tf.inference import predictor
    from catdog_tf.training.two_stage import train

    root = ram()
    monkeypatch.setenv("CATDOG_TF_CACHE", files.join(root, "weights_cache"))  # converted Lite0 weights
    rec = files.join(root, "records")
    build([kaggle_dir], rec, val_fraction=0.25)
    out, cache = files.join(root, "runs", "m"), files.join(root, "runs", "cache")
    # stage 1 on cached pooled features (cache on ram://), stage 2 on full images (Keras's
    # BackupAndRestore and TensorBoard on ram://)
    cfg = TrainConfig(backbone="efficientnet_lite0", records=rec, out=out, cache_dir=cache, image_size=64,
                      epochs1=2, epochs2=1, unfreeze_blocks=1, batch_size=8, head_augmentation="flip",
                      stage2_cache="off", augmentation="flip", steps_per_epoch=2, seed=1)
    r = train(cfg)
    assert r["val_count"] == 10 and np.isfinite(r["val_log_loss"])
    assert {"model.keras", "metrics.json", "flags.json", "stage1.done.json", "stage2.done.json",
            "stage1.weights.h5", "stage2.weights.h5", "val_predictions.csv", "saved_model", "tensorboard"} \
        <= set(files.listdir(out))
    assert len(files.read_text(files.join(out, "val_predictions.csv")).splitlines()) == 11
    events = [f for d, _, names in tf.io.gfile.walk(files.join(out, "tensorboard")) for f in names]
    assert any(f.startswith("events.out.tfevents.") for f in events)
    assert len(files.glob(files.join(cache, "*.npz"))) == 3  # train, its mirror images, validation
    assert len(files.glob(files.join(root, "weights_cache", "weights", "efficientnet_lite0-*.weights.h5"))) == 1
    model = predictor.load_model(out)
    _, y, p = predictor.predict_records(model, rec, "validation")
    assert abs(float(np.mean(-np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-15, 1)))) - r["val_log_loss"]) < 1e-5
    # a second run finds the finished run on ram:// and does nothing
    again = train(cfg)
    assert again["val_log_loss"] == r["val_log_loss"] and again["history1"] == r["history1"]


def test_weights_file_on_a_tf_filesystem_is_read_through_a_local_copy():
    from catdog_tf.models import registry, weights

    spec = registry.get("efficientnet_lite0")
    path = ram("w") + "/lite0.weights.h5"
    files.write_bytes(path, b"not really weights")
    local = weights._weights_file(spec, path)
    assert not files.is_remote(local) and local.read_bytes() == b"not really weights"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        weights._weights_file(spec, ram("w") + "/missing.h5")
