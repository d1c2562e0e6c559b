"""The row functions: each builds what it measures and returns summarize()'s figures plus
its own extras. They run only in child processes (catdog_tf.bench.child), one fresh
process per row, so TensorFlow is imported here at the top: the parent never imports this.
"""

from __future__ import annotations

import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras.src.legacy.preprocessing.image import ImageDataGenerator as LegacyImageDataGenerator

from catdog_tf.bench import fidelity
from catdog_tf.bench.measure import Clock, measure, ratio_runs, sample, snap, summarize
from catdog_tf.config import BuildConfig
from catdog_tf.data import manifest, pipeline, shards
from catdog_tf.inference import ensembling, predictor
from catdog_tf.models import registry
from catdog_tf.models.classifier import build_classifier, ModelConfig
from catdog_tf.training import features
from catdog_tf import distribution

# The reference's loader: keras.preprocessing.image.ImageDataGenerator is gone from Keras 3's
# public API; Keras 3 still ships the Keras 2 code privately (already loaded by `import keras`).

AUTOTUNE = tf.data.AUTOTUNE


def _image_data_generator():
    """(class, where from): tf_keras's public class (the Keras 2 package) when installed,
    else the identical copy Keras 3 keeps privately."""
    try:
        # Optional Keras 2 package (pip install tf_keras), heavy: imported by this row only.
        from tf_keras.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "tf_keras.preprocessing.image.ImageDataGenerator"
    except ImportError:
        return LegacyImageDataGenerator, "keras.src.legacy.preprocessing.image.ImageDataGenerator"


def _limit_dataset(loader: str, size: int, batch: int, records_dir: str):
    """One per-image function alone, over the records' JPEG bytes held in memory: decode alone
    at the DCT scale decode_resize picks ("decode"), decode_resize ("limit"), and the per-image
    functions of fidelity.per_image ("area", "limit-noaa")."""
    ex = list(manifest.read_examples(records_dir, "train"))
    enc = tf.constant([e["encoded"] for e in ex])
    hw = tf.constant([[e["height"], e["width"]] for e in ex], tf.int64)
    if loader == "decode":  # the decoded pixels are made in full; one of them is kept (any size)
        fn = lambda e, s: tf.cast(pipeline.decode_scaled(e, s[0], s[1], size)[:1, :1], tf.float32)  # noqa: E731
    else:  # "limit": make_dataset's own per-image work on these records (--store_size ones only decode)
        one = pipeline.record_decoder(records_dir, size) if loader == "limit" else fidelity.per_image(loader, size)
        if one is None:
            raise ValueError(f"unknown loader {loader!r}")
        fn = lambda e, s: one(e, s[0], s[1])  # noqa: E731
    ds = tf.data.Dataset.from_tensor_slices((enc, hw)).repeat()
    ds = ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, num_parallel_calls=AUTOTUNE, deterministic=False).prefetch(AUTOTUNE)
    return ds, {"in_memory_mb": round(sum(len(e["encoded"]) for e in ex) / 1e6, 1)}


def _pipe_dataset(loader: str, size: int, batch: int, records_dir: str | None = None, classes: str | None = None):
    """(iterable of batches, extra info) of one input pipeline, no model."""
    if loader in ("ours-train", "ours-eval"):
        return pipeline.make_dataset(records_dir, "train", size, batch,
                                     pipeline.Read(training=loader == "ours-train", seed=0, repeat=True)), {}
    if loader.startswith("limit") or loader in ("decode", "area"):
        return _limit_dataset(loader, size, batch, records_dir)
    if loader == "idg":
        idg, where = _image_data_generator()
        gen = idg(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                  zoom_range=0.2, horizontal_flip=True)
        return gen.flow_from_directory(classes, target_size=(size, size), batch_size=batch, class_mode="binary",
                                       seed=0), {"implementation": where}
    if loader == "idfd":
        ds = keras.utils.image_dataset_from_directory(classes, label_mode="binary", image_size=(size, size),
                                                      batch_size=batch, shuffle=True, seed=0, verbose=False)
        return ds.repeat(), {}
    raise ValueError(f"unknown loader {loader!r}")


def _batches(it, steps: int) -> int:
    n = 0
    for _ in range(steps):
        b = next(it)
        x = b[0] if isinstance(b, tuple) else b
        n += int(x.shape[0])
    return n


def row_pipe(loader: str, size: int, batch: int, steps: int, repeats: int, warmup: int,
             records: str | None = None, classes: str | None = None, variant: str = "",
             fidelity_key: str | None = None) -> dict:
    """One input pipeline, no model: images/s of batches of float images. (Its fidelity is
    measured by the table's fidelity row, under `fidelity_key`.)"""
    ds, extra = _pipe_dataset(loader, size, batch, records, classes)
    t0 = time.perf_counter()
    it = iter(ds)
    next(it)
    extra["first_batch_s"] = round(time.perf_counter() - t0, 3)
    return {**measure(lambda: _batches(it, steps), warmup, repeats), **extra}


def row_pair(loaders: list[str], size: int, batch: int, steps: int, rounds: int, warmup: int, records: str,
             repeats: int = 0, variant: str = "", classes: str | None = None) -> dict:
    """Several pipelines in ONE process, timed in alternating rounds (A B C, C B A, ...), so
    that other jobs' load hits all of them alike: the noise-robust wall-clock ratios. Only one
    pipeline is alive at a time (a fresh iterator per turn, warmed up with a few untimed
    batches), so no pipeline prefetches for free, or steals CPU, while another is timed.
    Top-level figures are those of loaders[1]; `paired` has every loader and the median
    per-round ratio of each to loaders[0] (`ratios`) and of each to each other (`versus`)."""
    datasets = {name: _pipe_dataset(name, size, batch, records, classes)[0] for name in loaders}
    samples: dict = {name: [] for name in loaders}
    for r in range(warmup + rounds):
        for name in (loaders if r % 2 == 0 else loaders[::-1]):
            it = iter(datasets[name])
            _batches(it, 3)  # fills the pipeline (and, first time, traces it); not timed
            a = snap()
            n = _batches(it, steps)
            b = snap()
            del it
            gc.collect()  # the iterator's background threads stop with it
            if r >= warmup:
                samples[name].append(sample(n, a, b))
    per = {name: summarize(v) for name, v in samples.items()}
    ratios = {}
    for name in loaders[1:]:
        rr = ratio_runs(samples[name], samples[loaders[0]])
        ratios[name] = {"x_first": rr["ratio"], "x_first_runs": rr["runs"], "x_first_cpu": rr["cpu"]}
    versus = {a: {b: ratio_runs(samples[a], samples[b]) for b in loaders if b != a} for a in loaders}
    return {**per[loaders[1]], "paired": {"per_loader": per, "ratios": ratios, "base": loaders[0], "versus": versus}}


class EpochClock(keras.callbacks.Callback):
    """Notes each epoch's time. skip_first_batch: time from the end of the epoch's first batch
    (images_per_epoch then excludes it), so a fresh iterator's start-up is not counted; its
    time goes to `startup`."""

    def __init__(self, images_per_epoch: int, skip_first_batch: bool = False):
        super().__init__()
        self.images_per_epoch, self.skip_first_batch = images_per_epoch, skip_first_batch
        self.samples, self.startup = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._a = snap()

    def on_train_batch_end(self, batch, logs=None):
        if self.skip_first_batch and batch == 0:
            now = snap()
            self.startup.append(now[0] - self._a[0])
            self._a = now

    def on_epoch_end(self, epoch, logs=None):
        self.samples.append(sample(self.images_per_epoch, self._a, snap()))


def _synthetic(size: int, batch: int):
    x = tf.random.stateless_uniform([batch, size, size, 3], seed=[1, 2], minval=0, maxval=255)
    y = tf.cast(tf.random.stateless_uniform([batch], seed=[3, 4]) > 0.5, tf.float32)
    # In memory; .batch() (rather than from_tensors) lets tf.distribute split the global batch.
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True).prefetch(2)


def _compile(model, lr: float):
    """As training.fit compiles (Adam, log loss, accuracy), without its callbacks: timing only."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])


def _classifier(backbone: str, weights, size: int, stage: int):
    keras.utils.set_random_seed(0)
    clf = build_classifier(ModelConfig(backbone, weights, size, seed=0))
    if stage == 2:
        registry.set_trainable_top_blocks(clf.backbone, backbone, 2)
    _compile(clf.model, 1e-3 if stage == 1 else 1e-5)
    return clf


def row_train(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int, records: str,
              stage: int, feed: str, strategy: str = "default") -> dict:
    """Epochs of model.fit (steps_per_epoch=steps) on the full classifier; stage 1: backbone
    frozen, stage 2: top 2 blocks trainable (backbones.set_trainable_top_blocks)."""
    strat, _ = distribution.choose_strategy(strategy)
    with strat.scope():
        clf = _classifier(backbone, weights, size, stage)
    if feed == "real":
        ds = pipeline.make_dataset(records, "train", size, batch, pipeline.Read(training=True, seed=0, repeat=True))
    else:
        ds = _synthetic(size, batch)
    clock = EpochClock(steps * batch)
    clf.model.fit(ds, epochs=warmup + repeats, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    trainable = sum(int(w.numpy().size) for w in clf.model.trainable_weights)
    return {**summarize(clock.samples[warmup:]), "replicas": strat.num_replicas_in_sync,
            "trainable_weights": trainable, "strategy": type(strat).__name__}


def row_train_pair(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int,
                   records: str, stage: int) -> dict:
    """row_train with both feeds in ONE process: one-epoch fits alternating real, synthetic,
    synthetic, real, ... on the same model, so other jobs' load hits both alike. Top-level
    figures are the real feed's; `paired` has both and the per-round ratio real / synthetic.
    Each fit() starts a new iterator (filling the shuffle buffer, the first decodes), which a
    real epoch (185 steps on the training split) pays once but a 6-step timing epoch would
    count ~30 times over: `steps` steps after a first batch are timed, and the first batch's
    time of each feed is reported apart (`startup_s`)."""
    clf = _classifier(backbone, weights, size, stage)
    feeds = {"real": pipeline.make_dataset(records, "train", size, batch,
                                           pipeline.Read(training=True, seed=0, repeat=True)),
             "synthetic": _synthetic(size, batch)}
    samples: dict = {k: [] for k in feeds}
    startup: dict = {k: [] for k in feeds}
    for r in range(warmup + repeats):
        for name in (("real", "synthetic") if r % 2 == 0 else ("synthetic", "real")):
            clock = EpochClock(steps * batch, skip_first_batch=True)
            clf.model.fit(feeds[name], epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
            if r >= warmup:
                samples[name] += clock.samples
                startup[name] += clock.startup
    per = {k: {**summarize(v), "startup_s": statistics.median(startup[k])} for k, v in samples.items()}
    rr = ratio_runs(samples["real"], samples["synthetic"])
    return {**per["real"], "paired": {"per_feed": per, "ratio": rr["ratio"], "ratio_runs": rr["runs"],
                                      "ratio_cpu": rr["cpu"]}}


def row_head_cached(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int,
                    records: str, head_rows: int, chunk: int, infer_repeats: int) -> dict:
    """The CPU fast path of stage 1: features.extract of pooled features once, then head
    epochs on the cached arrays. images_per_s is the head epoch rate."""
    keras.utils.set_random_seed(0)
    clf = build_classifier(ModelConfig(backbone, weights, size, augmentation="none", seed=0))
    n_batches = warmup + chunk * infer_repeats + 1
    ds = pipeline.make_dataset(records, "train", size, batch, pipeline.Read(with_ids=True, repeat=True)).take(n_batches)
    clock = Clock(ds, count=lambda b: b[1].shape[0])
    feats, labels, _ = features.extract(clf.pooled(), clock)
    extract = clock.summary(warmup, chunk)
    reps = -(-head_rows // len(feats))
    x = np.tile(feats, (reps, 1))[:head_rows]
    y = np.tile(labels, reps)[:head_rows]
    _compile(clf.head, 1e-3)
    ec = EpochClock(len(x))
    clf.head.fit(x, y, batch_size=batch, epochs=warmup + repeats, shuffle=True, verbose=0, callbacks=[ec])
    return {**summarize(ec.samples[warmup:]), "extract_images_per_s": extract["images_per_s"],
            "extract_runs": extract["runs"], "extract_cpu_images_per_s": extract["cpu_images_per_s"],
            "feature_dim": int(feats.shape[1])}


def row_infer(what: str, members: list, weights, batch: int, chunk: int, repeats: int, warmup: int,
              records: str) -> dict:
    """features: features.extract of the pooled backbone; predict: predict.predict_batches of
    the exported-style inference model; ensemble: the same for ensemble.build_ensemble."""
    keras.utils.set_random_seed(0)
    clfs = [build_classifier(ModelConfig(name, weights, size, augmentation="none", seed=0)) for name, size in members]
    size = max(c.image_size for c in clfs)
    n_batches = warmup + chunk * repeats + 1
    ds = pipeline.make_dataset(records, "train", size, batch, pipeline.Read(with_ids=True, repeat=True)).take(n_batches)
    if what == "features":
        clock = Clock(ds, count=lambda b: b[1].shape[0])
        features.extract(clfs[0].pooled(), clock)
    else:
        model = clfs[0].inference_model() if what == "predict" else ensembling.build_ensemble(
            [c.inference_model() for c in clfs], [1.0] * len(clfs))
        clock = Clock(ds.map(lambda x, y: x["image"]), count=lambda b: b.shape[0])
        predictor.predict_batches(model, clock)
    return clock.summary(warmup, chunk)


def row_build(source: str, repeats: int, warmup: int, work: str, max_side: int | None = None,
              store_size: int | None = None) -> dict:
    """records.build of a folder or zip into a fresh folder each run (no shard reuse)."""
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=work))
    runs = [0]

    def run_once():
        runs[0] += 1
        out = tmp / f"run{runs[0]}"
        m = shards.build([source], BuildConfig(out=str(out), val_fraction=0.1, max_side=max_side,
                                                store_size=store_size))
        shutil.rmtree(out)
        return m["written"]

    try:
        return measure(run_once, warmup, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


KINDS = {"pipe": row_pipe, "pair": row_pair, "fidelity": fidelity.row_fidelity, "train": row_train,
         "train_pair": row_train_pair,
         "head_cached": row_head_cached, "infer": row_infer, "build": row_build}
