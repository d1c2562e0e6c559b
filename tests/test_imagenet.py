"""ImageNet class names (shipped file), decoding and the cat/dog groups."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from catdog_tf.models import imagenet


def _tfds_dir():
    spec = importlib.util.find_spec("tensorflow_datasets")  # locate without importing it
    return Path(spec.origin).parent if spec else None


def test_names_and_canonical_order():
    names, wnids = imagenet.class_names(), imagenet.wordnet_ids()
    assert len(names) == len(wnids) == 1000
    assert list(wnids) == sorted(wnids)  # Keras/TF order is the sorted WordNet ids
    assert names[0].startswith("tench") and wnids[0] == "n01440764"
    assert names[281].startswith("tabby") and names[285] == "Egyptian cat"
    assert names[151] == "Chihuahua" and names[268] == "Mexican hairless"
    assert names[269].startswith("timber wolf") and names[286].startswith("cougar")
    assert imagenet.short_name(284) == "Siamese cat"


def test_matches_tensorflow_datasets_sources():
    root = _tfds_dir()
    labels = root / "datasets" / "imagenet2012" / "labels.txt" if root else None
    siscore = root / "datasets" / "siscore" / "labels.py" if root else None
    if not (labels and labels.is_file() and siscore.is_file()):
        pytest.fail("tensorflow_datasets label files not installed (pip install -e .[test])")
    assert tuple(labels.read_text().split()) == imagenet.wordnet_ids()
    spec = importlib.util.spec_from_file_location("_siscore_labels", siscore)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # a plain data module, no imports
    assert tuple(mod.IMAGENET_LABELS_LIST) == imagenet.class_names()


def test_groups():
    assert imagenet.CAT_CLASSES == range(281, 286)
    assert imagenet.DOG_CLASSES == range(151, 269)
    assert imagenet.group_of(283) == "cat" and imagenet.group_of(151) == "dog"
    assert imagenet.group_of(268) == "dog" and imagenet.group_of(269) == "other"
    assert imagenet.group_of(286) == "other"  # cougar: a cat, but not a house cat


def test_decode_predictions():
    p = np.full((2, 1000), 1e-4)
    p[0, 285], p[0, 281], p[0, 7] = 0.6, 0.2, 0.1
    p[1, 207] = 0.9
    out = imagenet.decode_predictions(p, top=3)
    assert len(out) == 2 and len(out[0]) == 3
    assert [i for i, _, _ in out[0]] == [285, 281, 7]
    idx, name, prob = out[1][0]
    assert (idx, name) == (207, imagenet.class_names()[207]) and prob == pytest.approx(0.9)
    assert isinstance(idx, int) and isinstance(prob, float)
    assert imagenet.decode_predictions(p[0])[0][0][0] == 285  # a single row works too
    with pytest.raises(ValueError, match="1000"):
        imagenet.decode_predictions(np.zeros((1, 10)))


def test_cat_dog_probabilities():
    p = np.zeros((3, 1000))
    p[0, 281:286] = 0.1  # cat 0.5
    p[0, 151] = 0.25  # dog 0.25
    p[1, 200] = 0.8
    p[2, 0] = 1.0  # neither
    cat, dog = imagenet.cat_dog_probs(p)
    np.testing.assert_allclose(cat, [0.5, 0.0, 0.0])
    np.testing.assert_allclose(dog, [0.25, 0.8, 0.0])
    np.testing.assert_allclose(imagenet.dog_score(p), [1 / 3, 1.0, 0.5], atol=1e-6)
