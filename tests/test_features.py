"""The feature cache: same answer fresh or cached, keyed by model, shards and flip."""

import keras
import numpy as np

from catdog_tf.data import records
from catdog_tf.progress import Progress
from catdog_tf.training import features


def tiny(name="tiny", seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 3)(inp)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name=name)


def test_cached_equals_fresh_and_is_reused(kaggle_dir, tmp_path):
    rec = tmp_path / "rec"
    records.build([str(kaggle_dir / "train")], records.BuildConfig(out=str(rec), folds=2, workers=1))
    m, cache = tiny(), tmp_path / "cache"
    fresh = features.cached(m, str(rec), "fold0", 16, cache_dir=str(cache))
    files = sorted(cache.iterdir())
    assert len(files) == 1
    again = features.cached(m, str(rec), "fold0", 16, cache_dir=str(cache))
    np.testing.assert_array_equal(fresh[0], again[0])
    np.testing.assert_array_equal(fresh[1], again[1])
    assert list(fresh[2]) == list(again[2]) and all(isinstance(i, str) for i in fresh[2])
    assert sorted(fresh[2]) == sorted(ex["id"] for ex in records.read_examples(str(rec), "fold0"))
    # A mirror image, another split or other weights is another cache entry, never a stale hit.
    flipped = features.cached(m, str(rec), "fold0", 16, flip=True, cache_dir=str(cache))
    assert not np.allclose(flipped[0], fresh[0])
    features.cached(m, str(rec), "fold0+fold1", 16, cache_dir=str(cache))
    other = features.cached(tiny(seed=1), str(rec), "fold0", 16, cache_dir=str(cache))
    assert not np.allclose(other[0], fresh[0])
    assert len(list(cache.iterdir())) == 4
    assert records.split_count(str(rec), "fold0+fold1") == 40


def test_progress_prints_rate_and_eta(capsys):
    bar = Progress(100, "demo", every_s=0)
    bar.update(40)
    err = capsys.readouterr().err
    assert "demo: 40/100 (40%)" in err and "img/s" in err and "ETA" in err
