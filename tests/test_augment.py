import numpy as np
import pytest
import tensorflow as tf

from catdog_tf.data import augment


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 255, size=(4, 48, 48, 3)).astype("float32"))


@pytest.mark.parametrize("policy", ["flip", "reference", "randaugment"])
def test_changes_training_batches_never_eval(policy, batch):
    layer = augment.build_augmentation(policy, seed=1)
    trained = layer(batch, training=True).numpy()
    evaluated = layer(batch, training=False).numpy()
    assert trained.shape == batch.shape
    np.testing.assert_array_equal(evaluated, batch.numpy())
    assert not np.allclose(trained, batch.numpy())
    assert trained.min() >= -1e-3 and trained.max() <= 255 + 1e-3


def test_none_policy_and_unknown():
    assert augment.build_augmentation("none") is None
    with pytest.raises(ValueError, match="reference"):
        augment.build_augmentation("bogus")


@pytest.mark.parametrize("policy", ["mixup", "cutmix"])
def test_batch_transforms_mix_labels(policy, batch):
    labels = tf.constant([0.0, 1.0, 0.0, 1.0])
    images, mixed = augment.batch_transform(policy, seed=3)(batch, labels)
    assert images.shape == batch.shape and mixed.shape == (4,)
    m = mixed.numpy()
    assert (m >= 0).all() and (m <= 1).all()
    assert not np.array_equal(images.numpy(), batch.numpy())
