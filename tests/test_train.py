"""Training on real photos with the offline EfficientNet-Lite0 weights (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, real_records, run_workers

@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """120 real photos (60 per class), 30 % validation."""
    return real_records(tmp_path_factory, range(2000, 2060), val_fraction=0.3, min_shards=2)


def run_train(*args, env=None, **kw):
    cmd = [sys.executable, "-u", "-m", "catdog_tf.train", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def test_short_real_run_improves_and_exports(rec, tmp_path):
    from catdog_tf.inference import predictor
    from catdog_tf.config import TrainConfig
    from catdog_tf.training.two_stage import train

    cfg = TrainConfig(backbone="efficientnet_lite0", records=rec, out=str(tmp_path / "m"), epochs1=4, epochs2=1,
                      unfreeze_blocks=1, batch_size=16, seed=1)
    r = train(cfg)
    assert r["untrained_val_loss"] > 0.5  # an untrained head knows nothing
    assert r["val_log_loss"] < 0.5 * r["untrained_val_loss"]
    assert r["val_accuracy"] >= 0.85 and r["val_count"] == 36
    m = tmp_path / "m"
    for f in ("model.keras", "metrics.json", "flags.json", "stage1.done.json", "stage2.done.json",
              "val_predictions.csv", "saved_model/saved_model.pb"):
        assert (m / f).exists(), f
    assert json.loads((m / "flags.json").read_text())["config"]["backbone"] == "efficientnet_lite0"
    assert any((m / "tensorboard").rglob("events.out.tfevents.*"))
    # the exported model, reloaded with safe_mode, reproduces the reported figure
    model = predictor.load_model(str(m))
    ids, y, p = predictor.predict_records(model, rec, "validation")
    from catdog_tf.metrics import log_loss
    assert abs(log_loss(y, p) - r["val_log_loss"]) < 1e-5
    # a second run finds both stages done and only re-exports
    r2 = train(cfg)
    assert r2["history1"] == r["history1"] and abs(r2["val_log_loss"] - r["val_log_loss"]) < 1e-6


def test_mirrored_two_devices_matches_one(rec, tmp_path):
    common = ["--backbone=efficientnet_lite0", f"--records={rec}", "--image_size=96", "--epochs1=3", "--epochs2=1",
              "--unfreeze_blocks=1", "--dropout=0", "--batch_size=16", "--cpu_devices=2", "--head_augmentation=none",
              f"--cache_dir={tmp_path / 'cache'}"]
    one = run_train(*common, "--strategy=default", f"--out={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train(*common, "--strategy=mirrored", f"--out={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in two.stderr
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    np.testing.assert_allclose(b["history1"]["loss"], a["history1"]["loss"], rtol=1e-3)
    assert abs(a["val_log_loss"] - b["val_log_loss"]) < 2e-3 * max(1.0, a["val_log_loss"])


def test_xla_under_mirrored_trains_both_stages_on_full_images(rec, tmp_path):
    """The headline XLA command: --xla=on --strategy=mirrored on 2 logical devices, both stages on
    full images with the augmentation on the device before each replica's compiled step."""
    out = tmp_path / "x"
    r = run_train("--backbone=efficientnet_lite0", f"--records={rec}", "--image_size=64", "--epochs1=1", "--epochs2=1",
                  "--unfreeze_blocks=1", "--batch_size=8", "--cpu_devices=2", "--strategy=mirrored", "--xla=on",
                  "--head_augmentation=reference", "--stage2_cache=off", "--steps_per_epoch=3", f"--out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in r.stderr and "XLA: on" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["history1"]["loss"]).all() and np.isfinite(m["history2"]["loss"]).all()


COMPILED_VS_NOT = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from catdog_tf.data import augment
from catdog_tf.training.fit import fit
from catdog_tf.training.recipe import FitConfig
keras.mixed_precision.set_global_policy(sys.argv[1])
out = {}
for jit in (False, True):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = (rng.uniform(size=64) > 0.5).astype("float32")
    with strategy.scope():
        inp = keras.Input((32, 32, 3))
        h = keras.layers.Rescaling(1 / 255.0)(inp)
        h = keras.layers.Conv2D(8, 3, activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", dtype="float32")(h))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    hist = fit(model, data, data, FitConfig(epochs=3, lr=1e-2, batch_size=16, jit=jit), strategy=strategy,
               augment=augment.build_augmentation("reference", seed=1), verbose=0)
    out[str(jit)] = hist.history["loss"]
print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_the_compiled_step_under_mirrored_gives_the_uncompiled_losses(policy):
    """fit's AugmentedStep on 2 logical devices: the XLA-compiled forward and backward pass (with
    loss scaling under mixed precision) gives the losses of the same step uncompiled, augmentation
    included (on the device, before the compiled part)."""
    r = subprocess.run([sys.executable, "-c", COMPILED_VS_NOT, policy], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    np.testing.assert_allclose(res["True"], res["False"], rtol=1e-4 if policy == "float32" else 2e-3)


@pytest.fixture(scope="module")
def rec40(tmp_path_factory):
    """40 real photos (20 per class), 30 % validation: the issue's two-worker command."""
    return real_records(tmp_path_factory, range(2100, 2120), val_fraction=0.3, min_shards=1)


@pytest.mark.parametrize("extra", [[], ["--mixed_precision=on"]], ids=["float32", "mixed_float16"])
def test_multiworker_both_stages_write_one_model(rec40, tmp_path, extra):
    """Stage 1 on cached features and stage 2 on full images, two workers on 127.0.0.1."""
    out = tmp_path / "mw"
    outs = run_workers("catdog_tf.train", ["--backbone=efficientnet_lite0", "--epochs1=1", "--epochs2=1", "--unfreeze_blocks=1",
                        "--stage2_cache=off", "--steps_per_epoch=2", "--batch_size=8", f"--records={rec40}",
                        f"--model_dir={out}", f"--cache_dir={tmp_path / 'cache'}", *extra])
    assert all("MultiWorkerMirroredStrategy with 2 replica(s)" in o for o in outs)
    # The cached features: each worker extracts its half of each split, once.
    for i, o in enumerate(outs):
        assert o.count(f"features: worker {i}/2 extracts") >= 2 and f"worker {1 - i}/2" not in o
    assert "stage 2: top 1 block(s)" in outs[0] and "custom distributed loop" in outs[0]
    if extra:
        assert "mixed precision: on" in outs[0]
    models = sorted(str(p.relative_to(tmp_path)) for p in out.rglob("model.keras"))
    assert models == ["mw/model.keras"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["val_count"] == 12 and np.isfinite(m["val_log_loss"])
    assert m["history2"]["epoch"] == [1] and np.isfinite(m["history2"]["loss"][0])


def tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    import tensorflow as tf

    tags: dict[str, list] = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                a = tf.make_ndarray(v.tensor)
                if a.size == 1 and a.dtype != object:  # scalars (the images share the train/ folder)
                    tags.setdefault(v.tag, []).append((e.step, float(a)))
    return tags


def test_mixed_precision_and_xla_on_cpu_and_tensorboard_across_stages(rec, tmp_path):
    """Both forced on for a few CPU steps (slower here, but they must run); TensorBoard's
    steps and epochs continue from stage 1 into stage 2, and the images tab shows each
    stage's own augmentation."""
    out = tmp_path / "mx"
    r = run_train("--backbone=efficientnet_lite0", f"--records={rec}", "--image_size=64", "--epochs1=2", "--epochs2=1",
                  "--unfreeze_blocks=1", "--head_augmentation=reference", "--stage2_cache=off", "--steps_per_epoch=3",
                  "--batch_size=8", "--mixed_precision=on", "--xla=on", "--log_every=2", f"--out={out}",
                  f"--cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mixed precision: on" in r.stderr and "XLA: on" in r.stderr
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["val_log_loss"])
    train = tb_scalars(out / "tensorboard" / "train")
    val = tb_scalars(out / "tensorboard" / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [1, 2, 3] and [s for s, _ in val["epoch_loss"]] == [1, 2, 3]
    steps = [s for s, _ in train["batch_loss"]]
    assert steps == sorted(steps) and max(steps) > 6  # stage 2's steps come after stage 1's 6
    assert all(v > 0 for _, v in train["steps_per_sec"]) and "learning_rate" in train
    assert all(v > 0 for _, v in train["images_per_sec"])
    import tensorflow as tf

    images = {v.tag for f in (out / "tensorboard" / "train").glob("events*")
              for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    assert {"stage1/augmented (reference)", "stage2/augmented (reference)"} <= images
    # One TensorBoard run per run folder: train/ and validation/ beside the HParams session.
    runs = {p.parent.relative_to(out) for p in out.rglob("events.out.tfevents.*")}
    assert runs == {Path("tensorboard"), Path("tensorboard/train"), Path("tensorboard/validation")}


def test_sigkill_mid_epoch_resumes_to_same_epoch_count(rec, tmp_path):
    args = ["--backbone=efficientnet_lite0", f"--records={rec}", "--image_size=64", "--epochs1=5", "--epochs2=0",
            "--head_augmentation=reference", "--steps_per_epoch=4", "--batch_size=8", "--patience=100",
            f"--out={tmp_path / 'k'}", f"--cache_dir={tmp_path / 'cache'}"]
    p = subprocess.Popen([sys.executable, "-u", "-m", "catdog_tf.train", *args], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.time() + 600
    for line in p.stdout:
        seen.append(line)
        if line.startswith("Epoch 3/5"):  # epoch 2 is backed up; epoch 3 has begun
            p.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline
    p.wait()
    assert p.returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert not (tmp_path / "k" / "stage1.done.json").exists()
    again = run_train(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    done = json.loads((tmp_path / "k" / "stage1.done.json").read_text())
    assert done["epoch"] == [3, 4, 5]  # resumed at the killed epoch, ended where a clean run ends


@pytest.fixture(scope="module")
def rec_with_test(tmp_path_factory):
    """40 labeled real photos (30 % validation) and 8 unlabeled ones in a test split."""
    from catdog_tf.config import BuildConfig
    from catdog_tf.data import shards
    from conftest import KAGGLE200

    root = tmp_path_factory.mktemp("student")
    (root / "train").mkdir()
    (root / "test").mkdir()
    for i in range(2100, 2120):
        for c in ("cat", "dog"):
            (root / "train" / f"{c}.{i}.jpg").symlink_to(KAGGLE200 / "train" / f"{c}.{i}.jpg")
    for k in range(1, 9):
        (root / "test" / f"{k}.jpg").symlink_to(KAGGLE200 / "test" / f"{k}.jpg")
    out = root / "rec"
    shards.build([str(root / "train"), str(root / "test")], BuildConfig(out=str(out), workers=2, val_fraction=0.3))
    return str(out)


def _teacher(rec, folder):
    """An out-of-fold file for the train split and a submission for the test split, each photo
    with its own P(dog) in (0.2, 0.8): {id: P}."""
    from catdog_tf.data import pipeline

    train_ids, test_ids = pipeline.example_ids(rec, "train"), pipeline.example_ids(rec, "test")
    p = {i: 0.2 + 0.6 * k / len(train_ids + test_ids) for k, i in enumerate(train_ids + test_ids)}
    folder.mkdir(exist_ok=True)
    (folder / "oof.csv").write_text("id,label,fold,p_dog\n" + "".join(
        f"{i},{int(i.startswith('dog'))},fold0,{p[i]:.8f}\n" for i in train_ids))
    (folder / "sub.csv").write_text("id,label\n" + "".join(f"{i},{p[i]:.6f}\n" for i in test_ids))
    return p


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "full-images"])
def test_student_trains_on_the_teachers_targets_test_photos_included(rec_with_test, tmp_path, cached):
    import tensorflow as tf

    from catdog_tf.config import TrainConfig
    from catdog_tf.training import features, two_stage

    p = _teacher(rec_with_test, tmp_path)
    cfg = TrainConfig(backbone="efficientnet_lite0", records=rec_with_test, out=str(tmp_path / "s"), image_size=96,
                      train_split="train+test", soft_targets=[str(tmp_path / "oof.csv"), str(tmp_path / "sub.csv")],
                      epochs1=1, epochs2=1, unfreeze_blocks=2, batch_size=8, schedule="cosine", warmup_epochs=0.5,
                      weight_decay=1e-4, stage2_cache="on" if cached else "off", head_augmentation="flip",
                      augmentation="flip")
    run = two_stage._Run(cfg, tf.distribute.get_strategy(), False, cfg.out, True, True)
    if cached:
        x, y, _ = run.arrays(run.clf.pooled(), flip=True)
        n = len(y) // 2  # photos, then their mirror images
        assert n == 28 + 8
        ids = list(features.load(run.clf.pooled(), rec_with_test, ["train+test"], 96, cache_dir=run.cache_dir).ids)
        np.testing.assert_allclose(y[:n], [p[i] for i in ids], atol=1e-6)
        np.testing.assert_allclose(y[n:], y[:n])
    else:
        make_train, _ = run.full_image_data()
        seen = np.concatenate([b[1].numpy() for b in make_train().take(run.steps)])
        values = np.asarray(list(p.values()))
        assert len(seen) >= 36 and np.abs(seen[:, None] - values[None, :]).min(axis=1).max() < 1e-5
    r = two_stage.train(cfg)  # both stages end to end, scored on the validation labels
    assert r["val_count"] == 12 and np.isfinite(r["val_log_loss"])
    assert len(r["history2"]["loss"]) == 1


def test_student_without_a_teacher_prediction_for_every_photo_is_one_line(rec_with_test, tmp_path):
    from test_bad_input import one_line_error

    _teacher(rec_with_test, tmp_path)
    r = run_train("--backbone=efficientnet_lite0", f"--records={rec_with_test}", f"--out={tmp_path / 's'}",
                  "--image_size=96", "--train_split=train+test", f"--soft_targets={tmp_path / 'oof.csv'}",
                  "--epochs1=1", "--epochs2=0")
    one_line_error(r, "no teacher prediction for 8 photo(s)")
    r = run_train("--backbone=efficientnet_lite0", f"--records={rec_with_test}", f"--out={tmp_path / 't'}",
                  "--image_size=96", "--train_split=train+test", "--epochs1=1", "--epochs2=0")
    one_line_error(r, "unlabeled")  # without a teacher an unlabeled split cannot be trained on
