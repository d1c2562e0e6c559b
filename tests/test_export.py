"""Serving artifacts load and agree with predict in a process that never imports catdog_tf."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from catdog_tf.config import BuildConfig
from catdog_tf.data import pipeline, shards
from catdog_tf.inference import ensembling, predictor, serving
from catdog_tf.models.blocks import all_layers
from catdog_tf.models.head import build_head, pooled_head_model, pooled_model
from conftest import KAGGLE200, REPO, require

PHOTOS = [f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(3990, 3994)]

OUTSIDE = r"""
import json, sys
import numpy as np, tensorflow as tf, keras
d, paths = sys.argv[1], sys.argv[2:]
served = tf.saved_model.load(d + "/saved_model")
p_bytes = served.signatures["serving_default"](image_bytes=tf.constant([open(p, "rb").read() for p in paths]))["p_dog"]
images = np.load(d + "/images.npy")
p_images = served.signatures["serving_images"](images=tf.constant(images))["p_dog"]
p_keras = keras.saving.load_model(d + "/model.keras").predict(images, verbose=0)[:, 0]
out = {"bytes": p_bytes.numpy().tolist(), "images": p_images.numpy().tolist(), "keras": p_keras.tolist()}
for name in ("model.tflite", "model_float16.tflite"):
    interp = tf.lite.Interpreter(model_path=d + "/" + name)
    inp, res = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(images.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], images)
    interp.invoke()
    out[name] = interp.get_tensor(res["index"]).reshape(-1).tolist()
out["imported"] = sorted(m for m in sys.modules if m.startswith("catdog_tf"))
print("RESULT", json.dumps(out))
"""


def _member(seed):
    pm = pooled_model("efficientnet_lite0", "auto", 96)
    head = build_head(1280, 0.2, seed)
    w = np.random.default_rng(seed).normal(0, 0.08, (1280, 1)).astype("float32")
    head.set_weights([w, np.asarray([0.1 * seed], "float32")])
    return pooled_head_model([pm], head, f"member_seed{seed}")


def test_export_agrees_with_predict_outside_the_package(tmp_path):
    keras.utils.set_random_seed(0)
    model = ensembling.build_ensemble([_member(1), _member(2)], [0.4, 0.6], "logit", 0.8)
    model.save(tmp_path / "ens.keras")
    paths = [str(require(KAGGLE200 / "train" / p)) for p in PHOTOS]
    png = tmp_path / "1.png"
    Image.open(paths[0]).save(png)
    out = tmp_path / "export"
    r = subprocess.run([sys.executable, "-m", "catdog_tf.export", f"--model={tmp_path / 'ens.keras'}", f"--out={out}",
                        "--quantize=float16"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {"model.keras", "saved_model", "model.tflite", "model_float16.tflite", "README.md"} <= \
        {p.name for p in out.iterdir()}
    loaded = predictor.load_model(str(tmp_path / "ens.keras"))
    p_ref = predictor.predict_files(loaded, paths)
    assert p_ref.std() > 0.02  # the members' heads separate the photos: agreement means something
    images = np.concatenate([b.numpy() for b in pipeline.files_dataset(paths, 96, 8)])
    np.save(out / "images.npy", images)
    got = subprocess.run([sys.executable, "-c", OUTSIDE, str(out), *paths, str(png)], cwd="/", capture_output=True,
                         text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    res = json.loads(got.stdout.split("RESULT", 1)[1])
    assert res["imported"] == []  # nothing of catdog_tf was needed
    for key in ("bytes", "images", "keras", "model.tflite"):
        np.testing.assert_allclose(np.asarray(res[key][:len(paths)]), p_ref, atol=2e-3, err_msg=key)
    np.testing.assert_allclose(res["model_float16.tflite"], p_ref, atol=1e-2)
    assert abs(res["bytes"][-1] - p_ref[0]) < 2e-2  # PNG bytes: the same photo, decoded in the graph
    # Every written model measured on the same labeled photos (here the 8 of this test)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in paths:
        (photos / Path(p).name).symlink_to(p)
    shards.build([str(photos)], BuildConfig(out=str(tmp_path / "rec"), val_fraction=0.0, workers=1))
    m = serving.measure(str(out), str(tmp_path / "rec"), "train")["measured"]["results"]
    assert set(m) == {"model.keras", "model.tflite", "model_float16.tflite"}
    assert all(r["count"] == 8 and r["images_per_s"] > 0 and r["bytes"] > 0 for r in m.values())
    assert abs(m["model.tflite"]["log_loss"] - m["model.keras"]["log_loss"]) < 1e-3
    # Side by side with another export folder, in one process: one table, ratios to the first.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    rep = serving.measure_side_by_side([str(out), str(other)], str(tmp_path / "rec"), "train")
    table = json.loads((out / "export.json").read_text())["side_by_side"]
    assert table == rep["side_by_side"] and len(table) == 6 and str(other / "model.tflite") in table
    assert table[str(out / "model.keras")]["speed_vs_first"] == 1.0
    assert table[str(other / "model.keras")]["log_loss"] == pytest.approx(m["model.keras"]["log_loss"], abs=1e-6)


def test_plain_keras_uses_standard_layers_only():
    keras.utils.set_random_seed(0)
    model = ensembling.build_ensemble([_member(3), _member(4)], [1.0, 3.0], "logit", 1.3)
    plain = serving.plain_keras(model)
    kinds = {type(layer).__module__.split(".")[0] for layer in all_layers(plain)}
    assert kinds == {"keras"}
    x = np.random.default_rng(0).uniform(0, 255, (3, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    cfg = json.dumps(plain.get_config())
    assert "catdog_tf" not in cfg


def test_decode_image_matches_the_pipeline_for_jpeg(tmp_path):
    data = open(require(KAGGLE200 / "train" / PHOTOS[0]), "rb").read()
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "JPEG", quality=90)
    got = serving.decode_image(buf.getvalue(), 64).numpy()
    want = next(iter(pipeline.encoded_dataset(lambda: iter([(buf.getvalue(), 200, 200)]), 64, 1))).numpy()[0]
    np.testing.assert_array_equal(got, want)
