"""Two-stage transfer learning under a tf.distribute strategy (`python -m catdog_tf.train`).

Stage 1 trains the new head on a frozen backbone; stage 2 unfreezes the backbone's top
blocks at a small learning rate. BatchNorm stays in inference mode throughout.

CPU fast path: when a stage needs no augmentation beyond horizontal flips, the frozen
part's activations (pooled features for stage 1, the input of the top blocks for stage 2)
are computed once per image and per flip, cached on disk, and the trainable part is fit
on those arrays (features.py). Both stages fit through training/fit.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from catdog_tf import contracts, distribution, files, identity, metrics
from catdog_tf.config import default_cache_dir, NO_WEIGHTS, TrainConfig
from catdog_tf.data import augment, manifest, oof, pipeline
from catdog_tf.errors import UserError
from catdog_tf.models import registry
from catdog_tf.models.classifier import build_classifier, Classifier, ModelConfig
from catdog_tf.models.head import feature_model_name
from catdog_tf.training import features
from catdog_tf.training.fit import fit
from catdog_tf.training.recipe import FitConfig
from catdog_tf.training.tblog import ScalarLog

CACHED_POLICIES = ("none", "flip")  # stage policies the cached-activation path can train


def log(msg: str):
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stage_done(work: str, stage: int, key: dict) -> dict | None:
    """The history of stage `stage` when `work` holds it finished with identity `key`; stage
    files made with another identity are removed first (identity.claim)."""
    products = [f"stage{stage}.done.json", f"stage{stage}.weights.h5", f"stage{stage}"]
    same = identity.claim(work, key, products, log, f"stage {stage}", record=f"stage{stage}.identity.json")
    p = files.join(work, f"stage{stage}.done.json")
    return files.read_json(p) if same and files.exists(p) else None


def _finish_stage(work: str, stage: int, model, history, tb: ScalarLog | None, offsets: dict) -> dict:
    model.save_weights(files.join(work, f"stage{stage}.weights.h5"))
    h = {k: [float(v) for v in vs] for k, vs in (history.history if history else {}).items()}
    # 1-based epoch numbers this process ran (a resumed run starts after the restored epoch)
    h["epoch"] = [e + 1 for e in (history.epoch if history else [])]
    # Where TensorBoard's global step and epoch stand after this stage: the next one continues there.
    h["tb_step"] = offsets["step"] + (tb.last_step if tb else 0)
    h["tb_epoch"] = offsets["epoch"] + (tb.last_epoch if tb else 0)
    files.write_text(files.join(work, f"stage{stage}.done.json"), json.dumps(h))
    return h


def _log_images(cfg: TrainConfig, work: str, size: int, stage: int, policy: str, cached: bool):
    """A few training images as the stage sees them, in TensorBoard's images tab."""
    x, _ = next(iter(pipeline.make_dataset(cfg.records, cfg.train_split, size, 8,
                                           pipeline.Read(training=True, seed=cfg.seed, fold=cfg.fold))))
    # Beside the training curves (tensorboard/train), not a run of their own.
    with tf.summary.create_file_writer(files.join(work, "tensorboard", "train")).as_default():
        tf.summary.image(f"stage{stage}/original", x / 255.0, step=0, max_outputs=8)
        if cached and policy == "flip":  # the cached path trains on every photo and its mirror image
            tf.summary.image(f"stage{stage}/mirror images (cached activations)",
                             tf.image.flip_left_right(x) / 255.0, step=0, max_outputs=8)
        elif not cached and policy != "none":
            aug = augment.build_augmentation(policy, seed=cfg.seed)
            tf.summary.image(f"stage{stage}/augmented ({policy})", aug(x, training=True) / 255.0, step=0,
                             max_outputs=8)


def _log_hparams(cfg: TrainConfig, work: str, results: dict):
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in dataclasses.asdict(cfg).items()}
    # The HParams session is the run's tensorboard/ folder (its train/ and validation/ curves are
    # its metrics), named after the run folder.
    with tf.summary.create_file_writer(files.join(work, "tensorboard")).as_default():
        hp.hparams(hparams, trial_id=files.name(cfg.out))
        for k in ("val_log_loss", "val_accuracy"):
            if k in results:
                tf.summary.scalar(k, results[k], step=0)


# Settings that do not change what a run makes (where it writes, how often it logs).
_NO_EFFECT = ("out", "cache_dir", "log_every", "profile_batches", "strategy")
# Settings only stage 2 reads: changing one keeps a finished stage 1 (batch_policy is not one:
# a full-image stage 1 mixes batches too).
_STAGE2_ONLY = ("epochs2", "lr2", "unfreeze_blocks", "augmentation", "stage2_cache")
# The run folder's products: removed when the folder's identity (flags.json) changes.
_PRODUCTS = ["model.keras", "saved_model", "metrics.json", "val_predictions.csv"]


def _identity(cfg: TrainConfig) -> dict:
    """What makes a run this run: the settings that affect its weights, the photos of its
    records (their shard checksums and exclusions) and the bytes of a --weights file."""
    return identity.canonical({
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NO_EFFECT},
        "records": manifest.content_fingerprint(cfg.records), "weights_sha256": identity.file_digest(cfg.weights),
        "soft_targets_sha256": [identity.file_digest(p) for p in cfg.soft_targets or []]})


def _stage_key(run_identity: dict, stage: int, stage2_cached: bool) -> dict:
    """A stage's identity: stage 1 leaves out what only stage 2 reads (but not whether stage 2
    caches the bottom: stage 1's features then come from it)."""
    if stage == 2:
        return {**run_identity, "stage": 2}
    cfg = {k: v for k, v in run_identity["config"].items() if k not in _STAGE2_ONLY}
    return {**run_identity, "config": cfg, "stage": 1, "stage2_cached": stage2_cached}


def _finished(out: str, run_identity: dict) -> dict | None:
    """metrics.json of a finished run in `out` with this identity, else None."""
    done = files.join(out, "metrics.json")
    if identity.recorded(out, "flags.json") == identity.canonical(run_identity) and files.exists(done) \
            and files.exists(files.join(out, "model.keras")):
        return files.read_json(done)
    return None


class _Run:
    """One train() call: its strategy, model, data and stage helpers."""

    def __init__(self, cfg: TrainConfig, strategy, xla: bool, work: str, chief: bool, has_val: bool):
        self.cfg, self.strategy, self.xla, self.work, self.chief = cfg, strategy, xla, work, chief
        self.has_val = has_val
        self.cache_dir = cfg.cache_dir or default_cache_dir(cfg.out)
        with strategy.scope():
            self.clf: Classifier = build_classifier(ModelConfig(
                backbone=cfg.backbone, weights=cfg.weights, image_size=cfg.image_size, pooling=cfg.pooling,
                dropout=cfg.dropout, augmentation=cfg.augmentation, seed=cfg.seed))
        self.size = self.clf.image_size
        self._split = None
        # A cosine schedule needs the epoch's length: full-image epochs then count steps.
        self.steps = cfg.steps_per_epoch or (math.ceil(
            manifest.split_count(cfg.records, cfg.train_split, cfg.fold, training=True) / cfg.batch_size)
            if cfg.schedule == "cosine" else None)
        if cfg.epochs2 > 0 and cfg.unfreeze_blocks > 0:
            n = registry.num_blocks(self.clf.backbone, cfg.backbone)
            if cfg.unfreeze_blocks > n:
                raise UserError(f"--unfreeze_blocks={cfg.unfreeze_blocks}: {cfg.backbone} has {n} blocks")

    def fit_config(self, stage: int, on_arrays: bool) -> FitConfig:
        c = self.cfg
        profile = tuple(int(b) for b in c.profile_batches.split(",")) if c.profile_batches else None
        return FitConfig(epochs=c.epochs1 if stage == 1 else c.epochs2, lr=c.lr1 if stage == 1 else c.lr2,
                         batch_size=c.batch_size, schedule=c.schedule, patience=c.patience,
                         label_smoothing=c.label_smoothing, warmup_epochs=c.warmup_epochs,
                         weight_decay=c.weight_decay, seed=c.seed,
                         steps_per_epoch=None if on_arrays else self.steps, jit=self.xla, profile_batches=profile)

    def full_image_model(self, policy: str):
        """(model, augment) of a full-image stage: the augmentation runs on each device before
        the forward and backward pass (fit.AugmentedStep), which XLA compiles when it is on; the
        same code either way."""
        return self.clf.inference_model(), augment.build_augmentation(policy, seed=self.cfg.seed)

    def full_image_data(self):
        """(dataset function for fit, validation dataset): full images, un-augmented."""
        c = self.cfg
        bt = augment.batch_transform(c.batch_policy, seed=c.seed)

        table = self._target_table() if c.soft_targets else None

        def make_train(ctx=None):
            # steps_per_epoch needs an endless stream; otherwise one pass is one epoch.
            ds = pipeline.make_dataset(c.records, c.train_split, self.size, c.batch_size, pipeline.Read(
                training=True, fold=c.fold, seed=c.seed, input_context=ctx, batch_transform=bt,
                repeat=self.steps is not None, with_ids=table is not None))
            return ds if table is None else ds.map(lambda x, y: (x["image"], table.lookup(x["id"])))

        val = pipeline.make_dataset(c.records, c.val_split, self.size, c.batch_size, pipeline.Read(fold=c.fold)) \
            if self.has_val else None
        return make_train, val

    def targets(self, ids) -> np.ndarray:
        """The teacher's P(dog) of these training photos (--soft_targets)."""
        return oof.teacher_targets(self.cfg.soft_targets, [str(i) for i in ids])

    def _target_table(self) -> tf.lookup.StaticHashTable:
        c = self.cfg
        skip = set(manifest.excluded_ids(c.records))
        ids = [i for i in pipeline.example_ids(c.records, c.train_split, c.fold) if i not in skip]
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(ids, self.targets(ids)), -1.0)

    def arrays(self, feature_model, flip: bool, dtype="float32"):
        """Cached activations of the training split (+ mirror images) and of the validation split."""
        c = self.cfg
        # Extracted under the strategy: each worker its share, each device its slice of a batch
        # (at least 32 photos a device).
        per_device = max(c.batch_size // self.strategy.num_replicas_in_sync, 32)
        kw = dict(fold=c.fold, cache_dir=self.cache_dir, dtype=dtype, strategy=self.strategy,
                  batch_size=per_device * distribution.local_replicas(self.strategy))
        fs = features.load(feature_model, c.records, [c.train_split], self.size, flip=flip, **kw) \
            .without(manifest.excluded_ids(c.records))
        if c.soft_targets:
            fs = dataclasses.replace(fs, y=self.targets(fs.ids))
        x, y = fs.with_mirrors()
        val = None
        if self.has_val:
            v = features.load(feature_model, c.records, [c.val_split], self.size, **kw)
            val = (v.x, v.y)
        return x, y, val

    def bottom_top(self):
        """The backbone cut below its top blocks; the bottom's activations are cached."""
        if self._split is None:
            k = self.cfg.unfreeze_blocks
            with self.strategy.scope():
                self._split = registry.split_at_top_blocks(
                    self.clf.backbone, self.cfg.backbone, k,
                    bottom_name=feature_model_name(self.cfg.backbone, self.size, f"bottom{k}"))
        return self._split

    def pooled_arrays(self, stage2_cached: bool, flip: bool):
        """Pooled features for the head. When stage 2 will cache the bottom's activations
        anyway, derive them from those (top blocks only) instead of a second full pass."""
        if stage2_cached:
            bottom, top = self.bottom_top()
            xb, y, valb = self.arrays(bottom, flip, dtype="float16")
            head_in = keras.Model(top.input, self.clf.pooling(top.output))
            f = lambda a: features.apply(head_in, a, "pooled features from the top blocks")  # noqa: E731
            return f(xb), y, ((f(valb[0]), valb[1]) if valb is not None else None)
        with self.strategy.scope():
            pooled = self.clf.pooled()
        return self.arrays(pooled, flip)

    def tb(self, offsets: dict) -> ScalarLog | None:
        if not self.chief:
            return None
        return ScalarLog(files.join(self.work, "tensorboard"), self.cfg.log_every, offsets["step"], offsets["epoch"],
                         batch_size=self.cfg.batch_size)

    def validate(self, model) -> dict:
        c = self.cfg
        ds = pipeline.make_dataset(c.records, c.val_split, self.size, 64, pipeline.Read(fold=c.fold, with_ids=True))
        ids, ys, ps = [], [], []
        for x, y in ds:
            ps.append(model(x["image"], training=False).numpy().reshape(-1))
            ys.append(y.numpy())
            ids += [i.decode() for i in x["id"].numpy()]
        ys, ps = np.concatenate(ys), np.concatenate(ps)
        where = f"{c.records}:{c.val_split}"
        ys, ps = contracts.labels(ys, where, ids), contracts.probabilities(ps, f"{where}: the trained model", ids)
        if self.chief:
            files.write_text(files.join(self.work, "val_predictions.csv"),
                             "id,label,p_dog\n" + "".join(f"{i},{int(t)},{p:.8f}\n" for i, t, p in zip(ids, ys, ps)))
        return {"val_log_loss": metrics.log_loss(ys, ps), "val_accuracy": metrics.accuracy(ys, ps),
                "val_count": int(len(ys))}


def train(cfg: TrainConfig) -> dict:
    """Runs both stages, exports the model; returns the final metrics."""
    with manifest.damage_named(cfg.records):
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    keras.utils.set_random_seed(cfg.seed)
    out = str(cfg.out)
    has_val = _check_splits(cfg)  # bad records, splits or folds: one clear line before anything slow
    run_identity = _identity(cfg)
    strategy, why = distribution.choose_strategy(cfg.strategy)
    log(f"strategy: {distribution.strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s): {why}")
    # Each "already done?" is decided together: a worker that skipped a stage alone would leave
    # the others waiting in their collectives.
    done = _finished(out, run_identity)
    if distribution.agree(strategy, done is not None):
        log(f"{out} holds a finished run with these flags and records: nothing to do")
        return {"config": dataclasses.asdict(cfg), **done}
    if cfg.weights in NO_WEIGHTS:
        log("WARNING: --weights=none: the backbone is random and frozen in stage 1, so only the head "
            "learns, on random features; for real results use --weights=auto (pretrained)")
    mp, why = distribution.choose_mixed_precision(cfg.mixed_precision)
    log(f"mixed precision: {'on' if mp else 'off'}: {why}")
    keras.mixed_precision.set_global_policy("mixed_float16" if mp else "float32")
    xla, why = distribution.choose_xla(cfg.xla, strategy)
    log(f"XLA: {'on' if xla else 'off'}: {why}")

    # The weights first (a Keras application's file downloads here): a run that cannot have them
    # stops before it writes anything into --out.
    registry.resolve_weights(cfg.backbone, cfg.weights)
    chief = distribution.is_chief()
    # Non-chief workers of a multi-worker job write to a scratch folder, never the output folder.
    work = out if chief else files.join(out, f".worker-{distribution.worker_index()}")
    files.check_out(out, "train", {"records": cfg.records, "weights": cfg.weights})
    run = _Run(cfg, strategy, xla, work, chief, has_val)  # checks --unfreeze_blocks: before any write
    files.makedirs(work)
    # flags.json describes what this folder's products were made with: stale ones go first.
    identity.claim(work, run_identity, _PRODUCTS, log, "the exported model", record="flags.json")
    results: dict = {"config": dataclasses.asdict(cfg)}
    stage2 = cfg.epochs2 > 0 and cfg.unfreeze_blocks > 0
    stage2_cached = stage2 and (cfg.stage2_cache == "on" or (
        cfg.stage2_cache == "auto" and not tf.config.list_physical_devices("GPU")))
    _stage1(run, run_identity, stage2_cached, results)
    if stage2:
        h1 = results.get("history1", {})
        _stage2(run, run_identity, stage2_cached, results, {"step": h1.get("tb_step", 0), "epoch": h1.get("tb_epoch", 0)})
    _export(run, results)
    return results


def _check_splits(cfg: TrainConfig) -> bool:
    """Whether there is a validation split; refuses unlabeled or overlapping splits (unlabeled
    training photos are fine with --soft_targets: the teacher labels them)."""
    if not cfg.soft_targets:
        manifest.require_labeled(cfg.records, cfg.train_split, cfg.fold, "training")
    has_val = _has_split(cfg.records, cfg.val_split, cfg.fold)
    if has_val:
        manifest.require_labeled(cfg.records, cfg.val_split, cfg.fold, "validation")
        both = set(manifest.split_names(cfg.records, cfg.train_split, cfg.fold)) & set(
            manifest.split_names(cfg.records, cfg.val_split, cfg.fold))
        if both:  # early stopping and the reported figure would be measured on training photos
            raise UserError(f"--val_split={cfg.val_split}: {', '.join(sorted(both))} is also in --train_split="
                            f"{cfg.train_split}")
    return has_val


def _stage1(run: "_Run", run_identity: dict, stage2_cached: bool, results: dict) -> None:
    """The head, on cached pooled features or on full images; results["history1"]."""
    cfg, clf, work, strategy = run.cfg, run.clf, run.work, run.strategy
    cached = cfg.head_augmentation in CACHED_POLICIES
    if run.chief:
        _log_images(cfg, work, run.size, 1, cfg.head_augmentation, cached)
    if _resumed(run, 1, _stage_key(run_identity, 1, stage2_cached), results) or cfg.epochs1 <= 0:
        return
    offsets = {"step": 0, "epoch": 0}
    tb = run.tb(offsets)
    if cached:
        log("stage 1: head on cached pooled features (fast path)")
        x, y, val = run.pooled_arrays(stage2_cached, cfg.head_augmentation == "flip")
        if val is not None:
            results["untrained_val_loss"] = metrics.log_loss(
                val[1], np.asarray(clf.head(val[0], training=False)).reshape(-1))
            log(f"untrained head: validation log loss {results['untrained_val_loss']:.4f}")
        hist = fit(clf.head, (x, y), val, run.fit_config(1, True), strategy=strategy,
                   work_dir=files.join(work, "stage1"), tb=tb, log=log)
    else:
        log(f"stage 1: head on full images with augmentation {cfg.head_augmentation!r}")
        hist = _fit_full_images(run, 1, cfg.head_augmentation, tb)
    results["history1"] = _finish_stage(work, 1, clf.model, hist, tb, offsets)


def _stage2(run: "_Run", run_identity: dict, cached: bool, results: dict, offsets: dict) -> None:
    """The top blocks at a small learning rate, on cached activations of the frozen bottom or
    on full images; results["history2"]."""
    cfg, clf, work, strategy = run.cfg, run.clf, run.work, run.strategy
    policy = ("flip" if cfg.head_augmentation != "none" else "none") if cached else cfg.augmentation
    if run.chief:
        _log_images(cfg, work, run.size, 2, policy, cached)
    if _resumed(run, 2, _stage_key(run_identity, 2, cached), results):
        return
    registry.set_trainable_top_blocks(clf.backbone, cfg.backbone, cfg.unfreeze_blocks)
    n_train = sum(int(np.prod(w.shape)) for w in clf.backbone.trainable_weights)
    log(f"stage 2: top {cfg.unfreeze_blocks} block(s) of {cfg.backbone} trainable ({n_train:,} weights), "
        f"lr {cfg.lr2}")
    tb = run.tb(offsets)
    if cached:
        log("stage 2 on cached activations of the frozen bottom (CPU path; flips only)")
        bottom, top = run.bottom_top()
        x, y, val = run.arrays(bottom, policy == "flip", dtype="float16")
        with strategy.scope():
            inp = keras.Input(top.input_shape[1:])
            stage_model = keras.Model(inp, clf.head(clf.pooling(top(inp, training=False))))
        hist = fit(stage_model, (x, y), val, run.fit_config(2, True), strategy=strategy,
                   work_dir=files.join(work, "stage2"), tb=tb, log=log)
    else:
        hist = _fit_full_images(run, 2, cfg.augmentation, tb)
    results["history2"] = _finish_stage(work, 2, clf.model, hist, tb, offsets)


def _resumed(run: "_Run", stage: int, key: dict, results: dict) -> bool:
    """Whether the stage finished in an earlier run (decided by every worker together): then
    its weights are loaded and its history is in results."""
    done = _stage_done(run.work, stage, key)
    if not distribution.agree(run.strategy, done is not None):
        return False
    run.clf.model.load_weights(files.join(run.work, f"stage{stage}.weights.h5"))
    log(f"stage {stage} already done: loaded its weights")
    results[f"history{stage}"] = done
    return True


def _fit_full_images(run: "_Run", stage: int, policy: str, tb):
    data, val = run.full_image_data()
    model, aug = run.full_image_model(policy)
    return fit(model, data, val, run.fit_config(stage, False), strategy=run.strategy, augment=aug,
               work_dir=files.join(run.work, f"stage{stage}"), tb=tb, log=log)


def _export(run: "_Run", results: dict) -> None:
    """The trained model measured on validation, saved (.keras and SavedModel) with its metrics."""
    final, work = run.clf.inference_model(), run.work
    if run.has_val:
        results.update(run.validate(final))
        log(f"validation: log loss {results['val_log_loss']:.5f}, accuracy {results['val_accuracy']:.4f} "
            f"on {results['val_count']} images")
    if not run.chief:
        return
    final.save(files.join(work, "model.keras"))
    try:
        final.export(files.join(work, "saved_model"), verbose=False)
    except Exception as e:  # noqa: BLE001 - serving export is a bonus; the .keras model is the product
        log(f"SavedModel export failed: {type(e).__name__}: {e}")
    files.write_text(files.join(work, "metrics.json"),
                     json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
    _log_hparams(run.cfg, work, results)
    files.write_run_readme(work, final.name, run.size, files.exists(files.join(work, "saved_model")))
    log(f"wrote {files.join(work, 'model.keras')}")


def _has_split(records_dir: str, split: str, fold: int | None) -> bool:
    """Whether there is a validation split; --val_split=none trains without one. A split that
    does not exist (a typo, a fold out of range) is an error, never a silent run without it."""
    if split in ("", "none"):
        return False
    return bool(manifest.shard_files(records_dir, split, fold))

