import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from catdog_tf.data import manifest, pipeline, shards
from conftest import KAGGLE200, KAGGLE_NATIVE, jpeg_bytes, require
from catdog_tf.config import BuildConfig


@pytest.fixture
def rec(kaggle_dir, tmp_path):
    shards.build([str(kaggle_dir)], BuildConfig(out=str(tmp_path / "rec"), val_fraction=0.25,
                                                         min_shards=4, workers=2))
    return str(tmp_path / "rec")


def collect(ds):
    ids, labels, images = [], [], []
    for x, y in ds:
        ids += [i.decode() for i in x["id"].numpy()]
        labels += list(y.numpy())
        images.append(x["image"].numpy())
    return ids, labels, np.concatenate(images)


def test_shapes_dtypes_ranges(rec):
    ds = pipeline.make_dataset(rec, "train", 48, 8, pipeline.Read(training=True, seed=0))
    x, y = next(iter(ds))
    assert x.shape == (8, 48, 48, 3) and x.dtype == tf.float32
    assert y.shape == (8,) and y.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0
    assert float(tf.reduce_max(x)) > 100  # 0..255, not 0..1
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}


def test_eval_order_is_deterministic_and_complete(rec):
    a = collect(pipeline.make_dataset(rec, "validation", 32, 3, pipeline.Read(with_ids=True)))
    b = collect(pipeline.make_dataset(rec, "validation", 32, 3, pipeline.Read(with_ids=True)))
    assert a[0] == b[0] and np.array_equal(a[2], b[2])
    assert len(a[0]) == len(set(a[0])) == 10
    assert all(lab == (1.0 if i.startswith("dog") else 0.0) for i, lab in zip(*a[:2]))


def test_training_covers_every_example_each_epoch(rec):
    ids, labels, _ = collect(pipeline.make_dataset(rec, "train", 16, 4,
                                                   pipeline.Read(training=True, seed=1, with_ids=True)))
    expected = {e["id"] for e in manifest.read_examples(rec, "train")}
    assert len(ids) == 30 and set(ids) == expected
    test_ids, _, _ = collect(pipeline.make_dataset(rec, "test", 16, 4, pipeline.Read(with_ids=True)))
    assert sorted(test_ids, key=int) == [str(i) for i in range(1, 7)]


def test_decode_matches_reference_resize(tmp_path):
    """Fused DCT-scaled decode + resize stays close to a full decode + antialiased resize."""
    path = require(KAGGLE_NATIVE / "train" / "cat.1.jpg")
    data = path.read_bytes()
    h, w = tf.io.extract_jpeg_shape(data).numpy()[:2]
    fused = pipeline.decode_resize(tf.constant(data), tf.constant(h, tf.int64), tf.constant(w, tf.int64), 64).numpy()
    full = tf.image.resize(tf.io.decode_jpeg(data, channels=3), [64, 64], antialias=True).numpy()
    assert fused.shape == (64, 64, 3)
    assert np.abs(fused - full).mean() < 4.0
    # and the file path reads the same as the records path
    from_file = next(iter(pipeline.files_dataset([str(path)], 64, 1))).numpy()[0]
    assert np.array_equal(from_file, fused)


def test_files_dataset_reads_png_content(tmp_path):
    p = tmp_path / "1.jpg"
    p.write_bytes(jpeg_bytes(fmt="PNG"))
    q = tmp_path / "2.jpg"
    q.write_bytes(jpeg_bytes(seed=4))
    x = next(iter(pipeline.files_dataset([str(p), str(q)], 40, 2))).numpy()
    assert x.shape == (2, 40, 40, 3)
    ref = np.asarray(Image.open(p).convert("RGB").resize((40, 40), Image.BILINEAR), np.float32)
    assert np.abs(x[0] - ref).mean() < 30


def test_distributed_input_pipelines_split_the_data(rec):
    """Each input pipeline of a multi-worker job reads a disjoint part; together all of it."""
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        ids, _, _ = collect(pipeline.make_dataset(rec, "train", 16, 8, pipeline.Read(with_ids=True, input_context=ctx)))
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 30


def test_cache_gives_same_batches(rec, tmp_path):
    a = collect(pipeline.make_dataset(rec, "validation", 24, 4, pipeline.Read(with_ids=True, cache=True)))
    b = collect(pipeline.make_dataset(rec, "validation", 24, 4,
                                      pipeline.Read(with_ids=True, cache=str(tmp_path / "c"))))
    assert a[0] == b[0] and np.array_equal(a[2], b[2])


def _decode_resize(data: bytes, size: int) -> np.ndarray:
    h, w = tf.io.extract_jpeg_shape(data).numpy()[:2]
    return pipeline.decode_resize(tf.constant(data), tf.constant(h, tf.int64), tf.constant(w, tf.int64), size).numpy()


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    """A smooth random photo-like JPEG (detail at several scales) of h x w."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    arr = np.clip(np.asarray(im, np.int16) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("size", [224, 299])
def test_fidelity_to_pil_antialiased_resize_on_native_photos(size):
    """Mean |error| (0..255) against PIL's antialiased resize of the full photo stays <= 1.5 on
    real native-size photos, where a full decode + plain bilinear resize (the Keras loader's
    work) is further off."""
    folder = require(KAGGLE_NATIVE / "train")
    ours, plain = [], []
    for name in [f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(1, 21)]:
        data = (folder / name).read_bytes()
        with Image.open(folder / name) as im:
            ref = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
        ours.append(np.abs(_decode_resize(data, size) - ref).mean())
        plain.append(np.abs(tf.image.resize(tf.io.decode_jpeg(data, channels=3), [size, size]).numpy() - ref).mean())
    assert np.mean(ours) <= 1.5, np.mean(ours)
    assert np.mean(ours) < np.mean(plain) - 0.3, (np.mean(ours), np.mean(plain))


@pytest.mark.parametrize("size", [200, 224, 300])
def test_upscaled_photos_keep_the_plain_bilinear_pixels(size):
    """No side shrinks (kaggle200 photos at the model sizes): bit-identical to a plain bilinear
    resize of TensorFlow's default decode, as before (the shipped model was trained on these)."""
    for name in ("cat.1.jpg", "dog.2.jpg"):
        data = require(KAGGLE200 / "train" / name).read_bytes()
        want = tf.image.resize(tf.io.decode_jpeg(data, channels=3), [size, size], method="bilinear").numpy()
        assert np.array_equal(_decode_resize(data, size), want)


def test_decode_scaled_picks_the_dct_ratio_and_the_idct():
    data = require(KAGGLE_NATIVE / "train" / "cat.1.jpg").read_bytes()  # 280 x 300
    h, w = (tf.constant(v, tf.int64) for v in tf.io.extract_jpeg_shape(data).numpy()[:2])
    # 64 px: 280 // 4 = 70 >= 64, so 1/4 scale; it shrinks, so the accurate IDCT
    got = pipeline.decode_scaled(tf.constant(data), h, w, 64).numpy()
    assert np.array_equal(got, tf.io.decode_jpeg(data, channels=3, ratio=4, dct_method="INTEGER_ACCURATE").numpy())
    # 300 px: full size, nothing shrinks: TensorFlow's default decode, unchanged
    got = pipeline.decode_scaled(tf.constant(data), h, w, 300).numpy()
    assert np.array_equal(got, tf.io.decode_jpeg(data, channels=3).numpy())
    assert not np.array_equal(got, tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy())


def test_one_side_shrinks_more_than_2x_while_the_other_grows():
    """A wide photo squashed to a square: the width shrinks 3x (area resize), the height grows
    (plain bilinear; an area resize there would be nearest-neighbour)."""
    data = _jpeg(150, 600)
    decoded = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    want = tf.image.resize(tf.image.resize(decoded, [150, 200], method="area"), [200, 200], method="bilinear").numpy()
    got = _decode_resize(data, 200)
    np.testing.assert_allclose(got, want, atol=1e-3)
    nearest_rows = tf.image.resize(decoded, [200, 200], method="area").numpy()
    assert np.abs(got - nearest_rows).mean() > 0.5  # not the area resize of both sides


def test_shrinking_up_to_2x_is_a_plain_bilinear_resize():
    data = _jpeg(150, 300)  # width shrinks 1.5x, height grows
    decoded = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(_decode_resize(data, 200), tf.image.resize(decoded, [200, 200]).numpy())


def test_records_stored_at_the_model_size_are_decoded_only(tmp_path):
    """records --store_size=S: at image_size S the pipeline decodes the stored S x S JPEG (accurate
    IDCT) and resizes nothing; at another size it resizes those pixels as any photo."""
    d = tmp_path / "train"
    d.mkdir()
    for i, (h, w) in enumerate([(300, 500), (420, 380), (60, 90)]):
        (d / f"cat.{i}.jpg").write_bytes(_jpeg(h, w, seed=i))
        (d / f"dog.{i}.jpg").write_bytes(_jpeg(w, h, seed=10 + i))
    shards.build([str(d)], BuildConfig(out=str(tmp_path / "rec"), val_fraction=0.0, store_size=64))
    stored = {e["id"]: e["encoded"] for e in manifest.read_examples(str(tmp_path / "rec"))}
    ids, _, images = collect(pipeline.make_dataset(str(tmp_path / "rec"), "train", 64, 4, pipeline.Read(with_ids=True)))
    assert sorted(ids) == sorted(stored)
    for i, img in zip(ids, images):
        want = tf.io.decode_jpeg(stored[i], channels=3, dct_method="INTEGER_ACCURATE").numpy()
        assert np.array_equal(img, want.astype(np.float32)), i  # fidelity: test_records, on real photos
    _, _, other = collect(pipeline.make_dataset(str(tmp_path / "rec"), "train", 48, 4, pipeline.Read(with_ids=True)))
    assert other.shape == (6, 48, 48, 3)
