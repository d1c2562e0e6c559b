import subprocess
import sys

import keras
import numpy as np
import pytest

from catdog_tf.errors import UserError
from catdog_tf.inference import predictor
from conftest import REPO, jpeg_bytes


@pytest.fixture
def tiny_model(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    m = keras.Model(inp, out, name="tiny")
    path = tmp_path / "tiny.keras"
    m.save(path)
    return str(path)


@pytest.fixture
def test_dir(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    for i in (1, 2, 10, 3):
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(h=20 + i, w=40, seed=i))  # sizes differ on purpose
    return d


def cli(*args):
    return subprocess.run([sys.executable, "-m", "catdog_tf.predict", *args], cwd=REPO, capture_output=True, text=True)


def test_submission_every_id_once_in_numeric_order(tiny_model, test_dir, tmp_path):
    out = tmp_path / "sub.csv"
    r = cli(f"--model={tiny_model}", f"--images={test_dir}", f"--out={out}", "--tta=flip")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "id,label"
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3", "10"]
    p = np.array([float(ln.split(",")[1]) for ln in lines[1:]])
    assert ((p > 0) & (p < 1)).all()
    # same numbers as the library call (flip TTA included)
    model = predictor.load_model(tiny_model)
    lib = predictor.predict_files(model, [str(test_dir / f"{i}.jpg") for i in (1, 2, 3, 10)], tta="flip")
    np.testing.assert_allclose(p, lib, atol=1e-6)


def test_unreadable_image_fails_without_writing(tiny_model, test_dir, tmp_path):
    (test_dir / "7.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "sub.csv"
    r = cli(f"--model={tiny_model}", f"--images={test_dir}", f"--out={out}")
    assert r.returncode != 0
    assert "7.jpg" in r.stderr and "nothing written" in r.stderr
    assert not out.exists()


def test_paths_on_command_line_print_p_dog(tiny_model, test_dir):
    r = cli(f"--model={tiny_model}", str(test_dir / "1.jpg"), str(test_dir / "2.jpg"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("\t") for ln in r.stdout.strip().splitlines()]
    assert [row[0] for row in rows] == [str(test_dir / "1.jpg"), str(test_dir / "2.jpg")]
    assert all(0 < float(row[1]) < 1 for row in rows)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="model.keras"):
        predictor.load_model(str(tmp_path))
