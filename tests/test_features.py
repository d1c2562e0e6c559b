"""The feature cache: same answer fresh or cached, keyed by model, shards and flip."""

import keras
import numpy as np

from catdog_tf.config import BuildConfig
from catdog_tf.data import manifest, shards
from catdog_tf.progress import Progress
from catdog_tf.training import features


def tiny(name="tiny", seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 3)(inp)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name=name)


def test_cached_equals_fresh_and_is_reused(kaggle_dir, tmp_path):
    rec = tmp_path / "rec"
    shards.build([str(kaggle_dir / "train")], BuildConfig(out=str(rec), folds=2, workers=1))
    m, cache = tiny(), tmp_path / "cache"
    fresh = features.cached(m, str(rec), "fold0", 16, cache_dir=str(cache))
    files = sorted(cache.iterdir())
    assert len(files) == 1
    again = features.cached(m, str(rec), "fold0", 16, cache_dir=str(cache))
    np.testing.assert_array_equal(fresh[0], again[0])
    np.testing.assert_array_equal(fresh[1], again[1])
    assert list(fresh[2]) == list(again[2]) and all(isinstance(i, str) for i in fresh[2])
    assert sorted(fresh[2]) == sorted(ex["id"] for ex in manifest.read_examples(str(rec), "fold0"))
    # A mirror image, another split or other weights is another cache entry, never a stale hit.
    flipped = features.cached(m, str(rec), "fold0", 16, flip=True, cache_dir=str(cache))
    assert not np.allclose(flipped[0], fresh[0])
    features.cached(m, str(rec), "fold0+fold1", 16, cache_dir=str(cache))
    other = features.cached(tiny(seed=1), str(rec), "fold0", 16, cache_dir=str(cache))
    assert not np.allclose(other[0], fresh[0])
    assert len(list(cache.iterdir())) == 4
    assert manifest.split_count(str(rec), "fold0+fold1") == 40


def test_progress_prints_rate_and_eta(capsys):
    bar = Progress(100, "demo", every_s=0)
    bar.update(40)
    err = capsys.readouterr().err
    assert "demo: 40/100 (40%)" in err and "img/s" in err and "ETA" in err


TWO_DEVICES = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from catdog_tf.models.head import pooled_model
from catdog_tf import distribution
from catdog_tf.training import features
rec, cache = sys.argv[1], sys.argv[2]
strategy, _ = distribution.choose_strategy("mirrored")
one = pooled_model("efficientnet_lite0", "auto", 96)
with strategy.scope():
    two = pooled_model("efficientnet_lite0", "auto", 96)
x1, y1, i1 = features.cached(one, rec, "fold0", 96, batch_size=7)
# batches of 7 split across the two devices (4 + 3: the odd one padded)
x2, y2, i2 = features.cached(two, rec, "fold0", 96, batch_size=7, strategy=strategy, cache_dir=cache)
odd = np.random.default_rng(0).uniform(0, 255, (5, 96, 96, 3)).astype("float32")
step = lambda im: one(im, training=False)
direct = np.asarray(step(odd))
split = np.asarray(distribution.replica_map(strategy, step)(odd))
print("RESULT", json.dumps({"n": len(i1), "replicas": strategy.num_replicas_in_sync, "ids_equal": list(i1) == list(i2),
      "labels_equal": bool((y1 == y2).all()), "max_diff": float(np.abs(x1 - x2).max()),
      "odd_diff": float(np.abs(direct - split).max()), "scale": float(np.abs(x1).max())}))
"""


def test_two_logical_devices_extract_the_same_features(tmp_path_factory, tmp_path):
    """Distributed predict over 2 logical CPU devices (MirroredStrategy) = one device, within 1e-5."""
    import json
    import subprocess
    import sys

    from conftest import REPO, real_records

    rec = real_records(tmp_path_factory, range(3100, 3116), folds=2, min_shards=1)
    r = subprocess.run([sys.executable, "-c", TWO_DEVICES, rec, str(tmp_path / "cache")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    assert res["replicas"] == 2 and res["n"] >= 10 and res["ids_equal"] and res["labels_equal"]
    assert res["scale"] > 0.1  # real features, not zeros
    assert res["max_diff"] <= 1e-5 and res["odd_diff"] <= 1e-5, res
    assert "features: worker 0/1 extracts" in r.stderr
    assert len(list((tmp_path / "cache").iterdir())) == 1
