"""Two-stage transfer learning: `python -m catdog_tf.train --backbone=xception`.

Stage 1 trains the new head on a frozen backbone; stage 2 unfreezes the backbone's top
blocks at a small learning rate. BatchNorm stays in inference mode throughout.

CPU fast path: when a stage needs no augmentation beyond horizontal flips, the frozen
part's activations (pooled features for stage 1, the input of the top blocks for stage 2)
are computed once per image and per flip, cached on disk, and the trainable part is fit
on those arrays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class TrainConfig:
    backbone: str = "efficientnet_lite0"
    weights: str | None = "auto"
    records: str = "records"
    model_dir: str = "runs/model"
    image_size: int | None = None
    batch_size: int = 32  # global batch
    epochs1: int = 10
    epochs2: int = 5
    lr1: float = 1e-3
    lr2: float = 1e-5
    unfreeze_blocks: int = 2
    dropout: float = 0.2
    pooling: str = "avg"
    augmentation: str = "reference"  # full-image stages
    head_augmentation: str = "flip"  # none/flip: cached-feature fast path for stage 1
    stage2_cache: str = "auto"  # auto: cache the frozen bottom's activations on CPU
    batch_policy: str = "none"  # mixup / cutmix on full-image stages
    mixed_precision: str = "auto"
    xla: str = "auto"
    strategy: str = "auto"
    fold: int | None = None
    train_split: str = "train"  # or joined folds, e.g. "fold2+fold3+fold4"
    val_split: str = "validation"  # early stopping, LR schedule and the reported figure
    seed: int = 0
    patience: int = 6
    cache_dir: str | None = None  # None: <model_dir>/../cache
    profile_batches: str | None = None  # e.g. "10,20": TensorBoard profiler window
    label_smoothing: float = 0.0
    steps_per_epoch: int | None = None  # limit full-image epochs (smoke tests, benchmarks)


def log(msg: str):
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _callbacks(cfg: TrainConfig, stage: int, work: Path, chief: bool, has_val: bool):
    import keras

    monitor = "val_loss" if has_val else "loss"
    cbs = [
        keras.callbacks.BackupAndRestore(str(work / "backup" / f"stage{stage}")),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.3, patience=2, min_lr=1e-7, verbose=1),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True, verbose=1),
        keras.callbacks.ModelCheckpoint(str(work / f"best_stage{stage}.weights.h5"), monitor=monitor,
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if chief:
        profile = tuple(int(b) for b in cfg.profile_batches.split(",")) if cfg.profile_batches else 0
        cbs.append(keras.callbacks.TensorBoard(str(work / "tensorboard" / f"stage{stage}"), profile_batch=profile))
    return cbs


def _compile(model, lr: float, cfg: TrainConfig, jit: bool):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile=jit,
    )


def _array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0):
    """Cached arrays as tf.data: Keras's own numpy adapter fails under MultiWorkerMirrored,
    and an explicit dataset lets every strategy shard it by example."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(2).with_options(options)


def _fit(model, strategy, cfg: TrainConfig, stage: int, lr: float, epochs: int, train_ds, val_ds, work: Path,
         chief: bool, jit: bool, steps_per_epoch: int | None = None):
    """model.fit with our callbacks; under MultiWorkerMirroredStrategy our own loop, because
    Keras 3's fit fails there (see catdog_tf/loop.py). train_ds / val_ds are datasets, or
    (x, y) arrays of cached features."""
    import tensorflow as tf

    arrays = isinstance(train_ds, tuple)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        if arrays:
            train_ds = _array_dataset(*train_ds, cfg.batch_size, True, cfg.seed)
            val_ds = _array_dataset(*val_ds, cfg.batch_size) if val_ds is not None else None
        from catdog_tf import loop

        log(f"stage {stage}: custom distributed loop (Keras fit does not support MultiWorkerMirroredStrategy)")
        if steps_per_epoch:
            train_ds = train_ds.take(steps_per_epoch)
        return loop.fit(model, strategy, train_ds, val_ds, epochs=epochs, lr=lr, global_batch=cfg.batch_size,
                        backup_dir=str(work / "backup" / f"stage{stage}"), patience=cfg.patience,
                        label_smoothing=cfg.label_smoothing, log=log)
    with strategy.scope():
        _compile(model, lr, cfg, jit)
    cbs = _callbacks(cfg, stage, work, chief, val_ds is not None)
    if arrays:  # Keras's own array path: deterministic shuffling, identical across strategies
        return model.fit(*train_ds, batch_size=cfg.batch_size, epochs=epochs, validation_data=val_ds, shuffle=True,
                         callbacks=cbs, verbose=2)
    return model.fit(train_ds, epochs=epochs, validation_data=val_ds, steps_per_epoch=steps_per_epoch,
                     callbacks=cbs, verbose=2)


def _stage_done(work: Path, stage: int) -> dict | None:
    p = work / f"stage{stage}.done.json"
    return json.loads(p.read_text()) if p.exists() else None


def _finish_stage(work: Path, stage: int, model, history) -> dict:
    model.save_weights(str(work / f"stage{stage}.weights.h5"))
    h = {k: [float(v) for v in vs] for k, vs in (history.history if history else {}).items()}
    # 1-based epoch numbers this process ran (a resumed run starts after the restored epoch)
    h["epoch"] = [e + 1 for e in (history.epoch if history else [])]
    (work / f"stage{stage}.done.json").write_text(json.dumps(h))
    return h


def _log_images(cfg: TrainConfig, aug, work: Path, size: int):
    """A few augmented training images in TensorBoard: what the model actually sees."""
    import tensorflow as tf

    from catdog_tf import pipeline

    x, _ = next(iter(pipeline.make_dataset(cfg.records, cfg.train_split, size, 8, training=True, seed=cfg.seed, fold=cfg.fold)))
    with tf.summary.create_file_writer(str(work / "tensorboard" / "images")).as_default():
        tf.summary.image("original", x / 255.0, step=0, max_outputs=8)
        if aug is not None:
            tf.summary.image("augmented", aug(x, training=True) / 255.0, step=0, max_outputs=8)


def _log_hparams(cfg: TrainConfig, work: Path, metrics: dict):
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in dataclasses.asdict(cfg).items()}
    with tf.summary.create_file_writer(str(work / "tensorboard" / "hparams")).as_default():
        hp.hparams(hparams)
        for k, v in metrics.items():
            tf.summary.scalar(k, v, step=0)


def train(cfg: TrainConfig) -> dict:
    """Runs both stages, exports the best model; returns the final metrics."""
    import keras
    import tensorflow as tf

    from catdog_tf import augment, backbones, distribute, features, pipeline
    from catdog_tf.evaluate import log_loss
    from catdog_tf.model import ModelConfig, build_classifier

    keras.utils.set_random_seed(cfg.seed)
    strategy, why = distribute.choose_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    log(f"strategy: {distribute.strategy_name(strategy)} with {replicas} replica(s): {why}")
    mp, why = distribute.choose_mixed_precision(cfg.mixed_precision)
    log(f"mixed precision: {'on' if mp else 'off'}: {why}")
    keras.mixed_precision.set_global_policy("mixed_float16" if mp else "float32")
    xla, why = distribute.choose_xla(cfg.xla, strategy)
    log(f"XLA: {'on' if xla else 'off'}: {why}")

    chief = distribute.is_chief()
    model_dir = Path(cfg.model_dir)
    # Non-chief workers of a multi-worker job write to a scratch folder, never the model dir.
    work = model_dir if chief else model_dir / f".worker-{json.loads(os.environ['TF_CONFIG'])['task']['index']}"
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = cfg.cache_dir or str(model_dir.parent / "cache")
    if chief:
        done_metrics = work / "metrics.json"
        flags_file = work / "flags.json"
        if done_metrics.exists() and (work / "model.keras").exists() and flags_file.exists() \
                and json.loads(flags_file.read_text()) == json.loads(json.dumps(dataclasses.asdict(cfg))):
            log(f"{work} holds a finished run with these flags: nothing to do")
            return {"config": dataclasses.asdict(cfg), **json.loads(done_metrics.read_text())}
        flags_file.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))

    with strategy.scope():
        clf = build_classifier(ModelConfig(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.dropout,
                                           "none" if xla else cfg.augmentation, cfg.seed))
    size = clf.image_size
    aug = augment.build_augmentation(cfg.augmentation, seed=cfg.seed) if xla else None
    if xla and aug is not None:
        log("augmentation runs in tf.data because XLA is on (its random ops lack XLA kernels)")
    has_val = _has_split(cfg.records, cfg.val_split, cfg.fold)
    results: dict = {"config": dataclasses.asdict(cfg)}

    def full_image_data():
        bt = augment.batch_transform(cfg.batch_policy, seed=cfg.seed)

        def make_train(ctx=None):
            # steps_per_epoch needs an endless stream; otherwise one pass is one epoch.
            ds = pipeline.make_dataset(cfg.records, cfg.train_split, size, cfg.batch_size, training=True, fold=cfg.fold,
                                       seed=cfg.seed, input_context=ctx, batch_transform=bt,
                                       repeat=cfg.steps_per_epoch is not None)
            if aug is not None:
                ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
            return ds

        train_ds = strategy.distribute_datasets_from_function(make_train) if replicas > 1 else make_train()
        val_ds = pipeline.make_dataset(cfg.records, cfg.val_split, size, cfg.batch_size, fold=cfg.fold) if has_val else None
        return train_ds, val_ds

    def cached_arrays(feature_model, flip_train: bool, dtype="float32"):
        kw = dict(fold=cfg.fold, cache_dir=cache_dir, dtype=dtype, batch_size=max(cfg.batch_size, 32))
        x, y, _ = features.cached(feature_model, cfg.records, cfg.train_split, size, **kw)
        if flip_train:
            xf, yf, _ = features.cached(feature_model, cfg.records, cfg.train_split, size, flip=True, **kw)
            x, y = np.concatenate([x, xf]), np.concatenate([y, yf])
        val = features.cached(feature_model, cfg.records, cfg.val_split, size, **kw)[:2] if has_val else None
        return x, y, val

    stage2 = cfg.epochs2 > 0 and cfg.unfreeze_blocks > 0
    stage2_cached = stage2 and (cfg.stage2_cache == "on" or (
        cfg.stage2_cache == "auto" and not tf.config.list_physical_devices("GPU")))
    split_models = {}

    def bottom_top():
        """The backbone cut below its top blocks; the bottom's activations are cached."""
        if not split_models:
            with strategy.scope():
                bottom, top = backbones.split_at_top_blocks(clf.backbone, cfg.backbone, cfg.unfreeze_blocks)
                bottom._name = f"{cfg.backbone}_{size}_bottom{cfg.unfreeze_blocks}"
            split_models.update(bottom=bottom, top=top)
        return split_models["bottom"], split_models["top"]

    def pooled_arrays():
        """Pooled features for the head. When stage 2 will cache the bottom's activations
        anyway, derive them from those (top blocks only) instead of a second full pass."""
        if stage2_cached:
            bottom, top = bottom_top()
            xb, y, valb = cached_arrays(bottom, cfg.head_augmentation == "flip", dtype="float16")
            head_in = keras.Model(top.input, clf.pooling(top.output))
            f = lambda a: head_in.predict(a, batch_size=256, verbose=0)  # noqa: E731
            return f(xb), y, ((f(valb[0]), valb[1]) if valb is not None else None)
        with strategy.scope():
            pooled = keras.Model(clf.backbone.input, clf.pooling(clf.backbone.output),
                                 name=f"{cfg.backbone}_{size}_{cfg.pooling}")
        return cached_arrays(pooled, cfg.head_augmentation == "flip")

    # ---------------------------------------------------------------- stage 1: the head
    if chief:
        _log_images(cfg, augment.build_augmentation(cfg.augmentation, seed=cfg.seed), work, size)
    done = _stage_done(work, 1)
    if done is not None:
        clf.model.load_weights(str(work / "stage1.weights.h5"))
        log("stage 1 already done: loaded its weights")
        results["history1"] = done
    elif cfg.epochs1 > 0:
        if cfg.head_augmentation in ("none", "flip"):
            log("stage 1: head on cached pooled features (fast path)")
            x, y, val = pooled_arrays()
            if val is not None:
                results["untrained_val_loss"] = log_loss(val[1], np.asarray(clf.head(val[0], training=False)).reshape(-1))
                log(f"untrained head: validation log loss {results['untrained_val_loss']:.4f}")
            hist = _fit(clf.head, strategy, cfg, 1, cfg.lr1, cfg.epochs1, (x, y), val, work, chief, xla)
        else:
            log(f"stage 1: head on full images with augmentation {cfg.augmentation!r}")
            train_ds, val_ds = full_image_data()
            hist = _fit(clf.model, strategy, cfg, 1, cfg.lr1, cfg.epochs1, train_ds, val_ds, work, chief, xla,
                        cfg.steps_per_epoch)
        results["history1"] = _finish_stage(work, 1, clf.model, hist)

    # ---------------------------------------------------------------- stage 2: top blocks
    if stage2:
        done = _stage_done(work, 2)
        if done is not None:
            clf.model.load_weights(str(work / "stage2.weights.h5"))
            log("stage 2 already done: loaded its weights")
            results["history2"] = done
        else:
            backbones.set_trainable_top_blocks(clf.backbone, cfg.backbone, cfg.unfreeze_blocks)
            n_train = sum(int(np.prod(w.shape)) for w in clf.backbone.trainable_weights)
            log(f"stage 2: top {cfg.unfreeze_blocks} block(s) of {cfg.backbone} trainable ({n_train:,} weights), lr {cfg.lr2}")
            if stage2_cached:
                log("stage 2 on cached activations of the frozen bottom (CPU path; flips only)")
                bottom, top = bottom_top()
                x, y, val = cached_arrays(bottom, cfg.head_augmentation != "none", dtype="float16")
                with strategy.scope():
                    inp = keras.Input(top.input_shape[1:])
                    stage_model = keras.Model(inp, clf.head(clf.pooling(top(inp, training=False))))
                hist = _fit(stage_model, strategy, cfg, 2, cfg.lr2, cfg.epochs2, (x, y), val, work, chief, xla)
            else:
                train_ds, val_ds = full_image_data()
                hist = _fit(clf.model, strategy, cfg, 2, cfg.lr2, cfg.epochs2, train_ds, val_ds, work, chief, xla,
                            cfg.steps_per_epoch)
            results["history2"] = _finish_stage(work, 2, clf.model, hist)

    # ---------------------------------------------------------------- export + measure
    final = clf.inference_model()
    if has_val:
        ds = pipeline.make_dataset(cfg.records, cfg.val_split, size, 64, fold=cfg.fold, with_ids=True)
        ids, ys, ps = [], [], []
        for x, y in ds:
            ps.append(final(x["image"], training=False).numpy().reshape(-1))
            ys.append(y.numpy())
            ids += [i.decode() for i in x["id"].numpy()]
        ys, ps = np.concatenate(ys), np.concatenate(ps)
        results["val_log_loss"] = log_loss(ys, ps)
        results["val_accuracy"] = float(np.mean((ps > 0.5) == (ys > 0.5)))
        results["val_count"] = int(len(ys))
        log(f"validation: log loss {results['val_log_loss']:.5f}, accuracy {results['val_accuracy']:.4f} "
            f"on {len(ys)} images")
        if chief:
            with open(work / "val_predictions.csv", "w") as f:
                f.write("id,label,p_dog\n")
                f.writelines(f"{i},{int(t)},{p:.8f}\n" for i, t, p in zip(ids, ys, ps))
    if chief:
        final.save(str(work / "model.keras"))
        try:
            final.export(str(work / "saved_model"), verbose=False)
        except Exception as e:  # noqa: BLE001 - serving export is a bonus; the .keras model is the product
            log(f"SavedModel export failed: {type(e).__name__}: {e}")
        (work / "metrics.json").write_text(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
        _log_hparams(cfg, work, {k: results[k] for k in ("val_log_loss", "val_accuracy") if k in results})
        log(f"wrote {work / 'model.keras'}")
    return results


def _has_split(records_dir: str, split: str, fold: int | None) -> bool:
    from catdog_tf import records

    try:
        return bool(records.shard_files(records_dir, split, fold))
    except records.RecordsError:
        return False


# ------------------------------------------------------------------------------------ CLI


def _define_flags():
    from absl import flags

    from catdog_tf import augment, distribute

    d = TrainConfig()
    flags.DEFINE_string("backbone", d.backbone, "Backbone name (python -m catdog_tf.backbones lists them).")
    flags.DEFINE_string("weights", d.weights, "auto | imagenet | none | PATH to a weights file.")
    flags.DEFINE_string("records", d.records, "Folder of shards + manifest.json (python -m catdog_tf.records).")
    flags.DEFINE_string("model_dir", d.model_dir, "Output folder: model.keras, saved_model/, metrics, logs.")
    flags.DEFINE_integer("image_size", None, "Input size override (default: the backbone's).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size (split across replicas).")
    flags.DEFINE_integer("epochs1", d.epochs1, "Stage 1 (head) epochs.")
    flags.DEFINE_integer("epochs2", d.epochs2, "Stage 2 (top blocks) epochs; 0 skips stage 2.")
    flags.DEFINE_float("lr1", d.lr1, "Stage 1 learning rate.")
    flags.DEFINE_float("lr2", d.lr2, "Stage 2 learning rate.")
    flags.DEFINE_integer("unfreeze_blocks", d.unfreeze_blocks, "Top blocks of the backbone trained in stage 2.")
    flags.DEFINE_float("dropout", d.dropout, "Dropout before the sigmoid unit.")
    flags.DEFINE_enum("pooling", d.pooling, ["avg", "flatten"], "Pooling of the last feature map.")
    flags.DEFINE_enum("augmentation", d.augmentation, list(augment.POLICIES), "Policy for full-image training.")
    flags.DEFINE_enum("head_augmentation", d.head_augmentation, ["none", "flip", *augment.POLICIES[2:]],
                      "Stage 1 augmentation; none/flip use the cached-feature fast path.")
    flags.DEFINE_enum("stage2_cache", d.stage2_cache, ["auto", "on", "off"],
                      "Train stage 2 on cached activations of the frozen bottom (auto: on without a GPU).")
    flags.DEFINE_enum("batch_policy", d.batch_policy, list(augment.BATCH_POLICIES), "MixUp/CutMix on full images.")
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, ["auto", "on", "off"], "float16 compute (auto: GPUs only).")
    flags.DEFINE_enum("xla", d.xla, ["auto", "on", "off"], "jit_compile the step (auto: single GPU only).")
    flags.DEFINE_enum("strategy", d.strategy, list(distribute.STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_integer("fold", None, "Cross-validation fold (records built with --folds).")
    flags.DEFINE_string("train_split", d.train_split, "Records split(s) to train on ('+' joins splits).")
    flags.DEFINE_string("val_split", d.val_split, "Records split for early stopping and the reported figure.")
    flags.DEFINE_integer("seed", d.seed, "Random seed.")
    flags.DEFINE_integer("patience", d.patience, "EarlyStopping patience (epochs).")
    flags.DEFINE_string("cache_dir", None, "Feature cache folder (default: <model_dir>/../cache).")
    flags.DEFINE_string("profile_batches", None, "TensorBoard profiler window, e.g. '10,20'.")
    flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing of the log loss.")
    flags.DEFINE_integer("steps_per_epoch", None, "Limit full-image epochs to this many steps.")
    flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests of "
                         "multi-device code paths on a CPU).")


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    if F.cpu_devices > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * F.cpu_devices)
    cfg = TrainConfig(**{f.name: getattr(F, f.name) for f in dataclasses.fields(TrainConfig)})
    if cfg.weights == "none":
        cfg.weights = None
    from catdog_tf.backbones import WeightsUnavailableError
    from catdog_tf.records import RecordsError

    try:
        results = train(cfg)
    except (WeightsUnavailableError, RecordsError) as e:
        raise SystemExit(f"error: {e}")
    print(json.dumps({k: results[k] for k in ("val_log_loss", "val_accuracy", "val_count") if k in results}))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
