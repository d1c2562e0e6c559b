"""The one trainer: train's stages, k-fold heads and feature fusion all fit through `fit`,
with the recipe (optimizer, schedule, early stopping) of training/recipe.py.

Data: (x, y) arrays (cached features), a tf.data.Dataset of global batches, or a function
input_context -> dataset (full images; each input pipeline reads its own shards).
Under MultiWorkerMirroredStrategy Keras's fit fails (keras-team/keras#20585), so the same
recipe runs in loop.py; everywhere else it is model.fit with callbacks.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from scipy.optimize import minimize

from catdog_tf import files
from catdog_tf.metrics import log_loss, sigmoid
from catdog_tf.models.head import build_head
from catdog_tf.training import loop, recipe
from catdog_tf.training.recipe import FitConfig
from catdog_tf.training.tblog import KerasTensorBoard, ScalarLog

def array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Cached arrays as tf.data: Keras's own numpy adapter fails under MultiWorkerMirrored,
    and an explicit dataset lets every strategy shard it by example."""
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(2).with_options(options)


def _callbacks(cfg: FitConfig, work_dir: str | None, has_val: bool, tb: ScalarLog | None) -> list:
    monitor = "val_loss" if has_val else "loss"
    cbs = [keras.callbacks.TerminateOnNaN()]
    if work_dir is not None:
        # Keras's file_utils route a URL path (gs://, hdfs://, ram://) through tf.io.gfile: the
        # backup can live wherever the run does.
        cbs.append(keras.callbacks.BackupAndRestore(files.join(work_dir, "backup")))
    cbs += recipe.plateau_callbacks(cfg, monitor)
    if tb is not None:
        cbs.append(KerasTensorBoard(tb, cfg.profile_batches))
    if not _terminal():  # a terminal has Keras's own bar; a log gets a line every 30 s
        cbs.append(StepLines(cfg.batch_size))
    return cbs


def _terminal() -> bool:
    return sys.stdout.isatty()


class StepLines(keras.callbacks.Callback):
    """Inside a long epoch, a line every `every_s` seconds: step of steps, images/s and ETA."""

    def __init__(self, batch_size: int, every_s: float = 30.0):
        super().__init__()
        self.batch_size, self.every_s = batch_size, every_s
        self._t0 = self._last = time.time()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self._last = time.time()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self._last < self.every_s:
            return
        self._last = now
        steps, done = self.params.get("steps"), batch + 1
        rate = done / max(now - self._t0, 1e-9)
        eta = f", ETA {(steps - done) / rate:.0f}s" if steps else ""
        print(f"epoch {self._epoch + 1}: step {done}/{steps or '?'}, {rate * self.batch_size:.1f} img/s{eta}",
              file=sys.stderr, flush=True)


class AugmentedStep(keras.Model):
    """A full-image training step in two parts, on each replica's device: the augmentation
    (random ops XLA has no kernels for), then the forward and backward pass, which with
    jit=True is one XLA cluster (a tf.function with jit_compile=True called inside the replica);
    the optimizer all-reduces and applies the (loss-scaled) gradients outside it. So XLA works
    under any tf.distribute strategy, mixed precision included, and the compiled and uncompiled
    steps run the same code. Keras's own compile(jit_compile=True) compiles the cross-replica
    function instead, which fails under MirroredStrategy (a replica's variables read from
    another device)."""

    def __init__(self, core: keras.Model, augment: keras.Model | None = None, jit: bool = False, **kw):
        super().__init__(name=core.name, **kw)
        self.core, self.augment = core, augment
        self._forward_backward = tf.function(self._step, jit_compile=jit, reduce_retracing=True)
        self.built = True  # the core model is built already

    def build(self, input_shape):
        self.built = True

    def call(self, x, training=False):
        return self.core(x, training=training)

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            p = self.core(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=p, training=True)
            scaled = self.optimizer.scale_loss(loss)
        return loss, p, tape.gradient(scaled, self.core.trainable_weights)

    def train_step(self, data):
        x, y = data[0], data[1]
        if self.augment is not None:
            x = self.augment(x, training=True)
        loss, p, grads = self._forward_backward(x, y)
        self.optimizer.apply_gradients(zip(grads, self.core.trainable_weights))
        # Keras divides a replica's loss by the replica count (for the all-reduce); the tracker
        # averages the per-replica value back, as Keras's own train_step does.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, p)


def fit(model: keras.Model, train, val, cfg: FitConfig, *, strategy: tf.distribute.Strategy | None = None,
        work_dir: str | None = None, tb: ScalarLog | None = None, verbose: int = 2, log=print,
        augment: keras.Model | None = None):
    """Fits `model` in place; returns its History (.history: metric -> per-epoch values, .epoch).
    work_dir: backups for resuming after a kill (None: no backups). `augment`: the stage's
    augmentation, kept out of `model`, run on the device before each step (AugmentedStep;
    needed for cfg.jit, whose compiled step cannot hold random ops)."""
    strategy = strategy or tf.distribute.get_strategy()
    work = str(work_dir) if work_dir else None
    arrays = isinstance(train, tuple)
    decay_steps = cfg.epochs * (math.ceil(len(train[0]) / cfg.batch_size) if arrays else (cfg.steps_per_epoch or 1))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        log("custom distributed loop (Keras fit does not support MultiWorkerMirroredStrategy)")
        if arrays:
            train = array_dataset(*train, cfg.batch_size, True, cfg.seed)
            val = array_dataset(*val, cfg.batch_size) if val is not None else None
        elif val is not None:  # every worker evaluates its share of the examples, whatever the file count
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            val = val.with_options(options)
        return loop.fit(model, strategy, train, val, dataclasses.replace(cfg, steps_per_epoch=None) if arrays else cfg,
                        decay_steps=decay_steps, tb=tb, log=log,
                        backup_dir=files.join(work, "backup") if work else tempfile.mkdtemp(prefix="catdog-fit-"))
    with strategy.scope():
        if cfg.jit or augment is not None:
            model = AugmentedStep(model, augment, jit=cfg.jit)
        model.compile(optimizer=recipe.optimizer(cfg, decay_steps),
                      loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], jit_compile=False)
    cbs = _callbacks(cfg, work, val is not None, tb)
    if arrays:  # Keras's own array path: deterministic shuffling, identical across strategies
        return model.fit(*train, batch_size=cfg.batch_size, epochs=cfg.epochs, validation_data=val, shuffle=True,
                         callbacks=cbs, verbose=verbose)
    if callable(train) and not isinstance(train, tf.data.Dataset):
        train = (strategy.distribute_datasets_from_function(train) if strategy.num_replicas_in_sync > 1
                 else train(None))
    # Full images: a bar with an ETA inside each epoch on a terminal (StepLines in a log).
    return model.fit(train, epochs=cfg.epochs, validation_data=val, steps_per_epoch=cfg.steps_per_epoch,
                     shuffle=False, callbacks=cbs, verbose=1 if verbose and _terminal() else verbose)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, val=None, dropout: float = 0.0,
                 max_iter: int = 3000) -> tuple[keras.Model, dict]:
    """The head as an L2-regularized logistic regression, solved by L-BFGS (full batch,
    deterministic) on standardized features: for many features (a fusion of backbones), where
    Adam with dropout overfits (RESULTS.md, experiment 32). y may be soft targets. Returns the
    usual head (models/head.py) with the standardization folded into its Dense weights, and a
    history dict ({"loss": [final objective], "val_loss": [log loss on val]})."""
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0 (it keeps the solution finite on separable features), not {l2}")
    t = np.asarray(y, np.float64).reshape(-1)
    xs = np.array(x, np.float64)  # one float64 copy, standardized in place
    mu, sd = xs.mean(0), xs.std(0)
    # A (near-)constant feature carries nothing; dividing by its tiny spread would give a huge
    # weight and bias that cancel badly in the float32 head, so it gets weight 0 (sd = inf).
    sd = np.where(sd < 1e-4 * np.maximum(1.0, np.abs(mu)), np.inf, sd)
    xs -= mu
    xs /= sd
    n, d = xs.shape

    def objective(wb):
        w, b = wb[:-1], wb[-1]
        z = xs @ w + b
        g = sigmoid(z) - t
        return (np.mean(np.logaddexp(0, z) - t * z) + 0.5 * l2 * w @ w,
                np.concatenate([xs.T @ g / n + l2 * w, [g.mean()]]))

    res = minimize(objective, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    if not res.success:
        print(f"warning: the logistic head did not converge ({res.message}; {res.nit} iterations)", file=sys.stderr)
    w = res.x[:-1] / sd
    b = res.x[-1] - mu @ w
    head = build_head(d, dropout)
    head.set_weights([w.reshape(d, 1).astype(np.float32), np.asarray([b], np.float32)])
    hist = {"loss": [float(res.fun)]}
    if val is not None:
        hist["val_loss"] = [log_loss(val[1], sigmoid(np.asarray(val[0], np.float64) @ w + b))]
    return head, hist


def fit_head(x: np.ndarray, y: np.ndarray, val, cfg: FitConfig, *, dropout: float, seed: int,
             **kw) -> tuple[keras.Model, object]:
    """A new head (models/head.py) fitted on pooled features: k-fold heads and fusion."""
    keras.utils.set_random_seed(seed)
    head = build_head(x.shape[1], dropout, seed)
    return head, fit(head, (x, y), val, cfg, **kw)


