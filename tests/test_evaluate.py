import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from catdog_tf import metrics
from catdog_tf.inference import predictor
from conftest import REPO, jpeg_bytes
from catdog_tf.config import BuildConfig


def test_log_loss_is_kaggles_formula():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 1.0, 0.0])  # the last two are clipped to 1e-15, not infinite
    assert abs(metrics.log_loss(y, p) - (-(np.log(0.9) + np.log(0.8)) / 4)) < 1e-9
    assert metrics.log_loss([1], [0.0]) == -np.log(1e-15)
    assert metrics.log_loss([1], [0.0], eps=0.01) == -np.log(0.01)


def test_evaluate_folder_json_and_plots(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(x), name="tiny")
    m.save(tmp_path / "m.keras")
    d = tmp_path / "labeled"
    d.mkdir()
    for i in range(6):  # any size: resized as in training
        (d / f"cat.{i}.jpg").write_bytes(jpeg_bytes(h=20 + 3 * i, w=50, seed=i))
        (d / f"dog.{i}.jpg").write_bytes(jpeg_bytes(h=60, w=25 + i, seed=50 + i))
    (d / "notes.txt").write_text("not an image")
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "-m", "catdog_tf.evaluate", f"--model={tmp_path / 'm.keras'}",
                        f"--images={d}", f"--json_out={out}", "--clip=0.05"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["count"] == 12 and {"log_loss", "accuracy", "count"} <= s.keys()
    paths = sorted(str(p) for p in d.glob("*.jpg"))
    ids = [p.rsplit("/", 1)[1][:-4] for p in paths]
    y = np.array([1.0 if i.startswith("dog") else 0.0 for i in ids])
    p = predictor.predict_files(predictor.load_model(str(tmp_path / "m.keras")), paths)
    assert abs(s["log_loss"] - metrics.log_loss(y, p)) < 1e-6
    assert abs(s["log_loss_clipped"]["0.05"] - metrics.log_loss(y, p, 0.05)) < 1e-6
    assert abs(s["accuracy"] - np.mean((p > 0.5) == (y > 0.5))) < 1e-9
    assert s["skipped"][0]["file"].endswith("notes.txt")
    assert len(s["worst"]) == 12 and s["worst"][0]["loss"] >= s["worst"][-1]["loss"]
    plots = tmp_path / "eval_plots"
    assert (plots / "calibration.png").stat().st_size > 10_000
    assert (plots / "worst_mistakes.png").stat().st_size > 10_000


def test_bootstrap_interval_covers_and_narrows_with_more_photos():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000).astype(float)
    p = np.clip(np.where(y == 1, 0.9, 0.1) + rng.normal(0, 0.05, 4000), 1e-4, 1 - 1e-4)
    p[:4] = 1 - y[:4]  # four confident mistakes: a skewed interval
    lo, hi = metrics.bootstrap_ci(y, p)
    assert lo < metrics.log_loss(y, p) < hi
    lo2, hi2 = metrics.bootstrap_ci(y[:400], p[:400])
    assert hi2 - lo2 > 2 * (hi - lo)
    assert metrics.bootstrap_ci(y, p) == [lo, hi]  # seeded: the same interval every run


def test_evaluate_scores_an_out_of_fold_csv_with_cleaned_figures_and_a_sheet(tmp_path):
    """--predictions: the label-error review path; excluded photos scored but marked."""
    from catdog_tf.data import manifest, shards
    from catdog_tf.errors import UserError
    from catdog_tf.inference import scoring
    from catdog_tf.data import oof
    d = tmp_path / "train"
    d.mkdir()
    ids = [f"{c}.{i}" for c in ("cat", "dog") for i in range(8)]
    for n, i in enumerate(ids):
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(seed=n))
    (tmp_path / "ex.txt").write_text("dog.3\n")
    rec = tmp_path / "rec"
    shards.build([str(d)], BuildConfig(out=str(rec), folds=2, exclude=str(tmp_path / "ex.txt"), workers=2))
    y = np.asarray([i.startswith("dog") for i in ids], float)
    p = np.where(y == 1, 0.95, 0.05)
    p[ids.index("cat.2")] = 0.999  # a confident contradiction: a label-error candidate
    p[ids.index("dog.3")] = 0.01  # excluded from training, still scored
    excluded = np.asarray([i == "dog.3" for i in ids])
    fold_of = {e["id"]: k for k in ("fold0", "fold1") for e in manifest.read_examples(str(rec), k)}
    folds = [fold_of[i] for i in ids]
    oof.write_oof(tmp_path / "oof.csv", ids, y, folds, p, excluded)
    r = subprocess.run([sys.executable, "-m", "catdog_tf.evaluate", f"--predictions={tmp_path / 'oof.csv'}",
                        f"--records={rec}", f"--json_out={tmp_path / 'e.json'}", "--worst=4"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "e.json").read_text())
    assert s["count"] == 16 and s["excluded"] == 1 and s["cleaned"]["count"] == 15
    assert s["log_loss"] == metrics.log_loss(y, p)
    assert s["cleaned"]["log_loss"] == metrics.log_loss(y[~excluded], p[~excluded])
    assert [w["id"] for w in s["worst"][:2]] == ["cat.2", "dog.3"] and s["worst"][1]["excluded"]
    assert (tmp_path / "e_plots" / "worst_mistakes.png").stat().st_size > 1000
    assert "95% CI" in r.stdout and "excluded from training" in r.stdout
    # A CSV from other records (another exclusion list) is refused in one line.
    oof.write_oof(tmp_path / "other.csv", ids, y, folds, p)
    r = subprocess.run([sys.executable, "-m", "catdog_tf.evaluate", f"--predictions={tmp_path / 'other.csv'}",
                        f"--records={rec}"], cwd=REPO, capture_output=True, text=True)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr[-2000:]
    assert "excluded photos differ" in errors[0]
    # A partial file (a photo's row missing) would score a subset: refused too.
    keep = [k for k, i in enumerate(ids) if i != "cat.5"]
    oof.write_oof(tmp_path / "part.csv", [ids[k] for k in keep], y[keep], [folds[k] for k in keep], p[keep],
                    excluded[keep])
    with pytest.raises(UserError, match="partial"):
        scoring.evaluate_predictions(str(tmp_path / "part.csv"), records_dir=str(rec))
    # Without records the figures and the calibration plot are made; the sheet has no photos to show.
    s = scoring.evaluate_predictions(str(tmp_path / "oof.csv"), out_dir=str(tmp_path / "alone"))
    assert s["count"] == 16 and s["worst_png"] is None and (tmp_path / "alone" / "calibration.png").exists()
