"""The training loop for MultiWorkerMirroredStrategy.

Keras 3.15's model.fit/evaluate fail under MultiWorkerMirroredStrategy (keras-team/keras
#20585: the symbolic build and the metric reductions mishandle PerReplica values), so
multi-host runs train with this loop: strategy.run per step, SUM all-reduce of losses,
and training/recipe.py's callbacks re-done plainly: best weights on validation log loss,
ReduceLROnPlateau, EarlyStopping (restore best), backup/restore per epoch (in the model
dir, like Keras's BackupAndRestore), loss scaling under mixed_float16, TensorBoard scalars.
"""

from __future__ import annotations

import json
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from catdog_tf import distribution, files
from catdog_tf.training import recipe
from catdog_tf.training.recipe import FitConfig
from catdog_tf.training.tblog import current_lr, ScalarLog


class History:
    """What keras.callbacks.History offers that training reads."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []


def _distribute(strategy, data):
    """A dataset function (input_context -> per-replica batches) or a dataset of global batches."""
    if callable(data) and not isinstance(data, tf.data.Dataset):
        return strategy.distribute_datasets_from_function(data)
    return strategy.experimental_distribute_dataset(data)


def fit(model: keras.Model, strategy: tf.distribute.Strategy, train: tf.data.Dataset | Callable,
        val: tf.data.Dataset | None, cfg: FitConfig, *, decay_steps: int, backup_dir: str,
        tb: ScalarLog | None = None, log=print) -> History:
    """train: a dataset function or a dataset of global batches of (x, y) (with
    cfg.steps_per_epoch it must repeat: one iterator runs across epochs); val: a dataset of
    global batches. Every worker keeps its own backup_dir (non-chief workers: a scratch
    folder), as Keras does."""
    run = _Loop(model, strategy, cfg, decay_steps, train, val, tb)
    backup = _Backup(str(backup_dir), model, run.opt)
    state = backup.restore(strategy, log) or {"epoch": 0, "best": float("inf"), "wait": 0, "plateau": 0, "lr": cfg.lr}
    run.state = state
    plateau = cfg.schedule == "plateau"
    if plateau:
        run.opt.learning_rate.assign(state["lr"])
    hist = History()
    for epoch in range(state["epoch"], cfg.epochs):
        logs, monitor = run.epoch_logs()
        log(f"epoch {epoch + 1}/{cfg.epochs}: " + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items()))
        for k, v in logs.items():
            hist.history.setdefault(k, []).append(v)
        hist.epoch.append(epoch)
        if tb is not None:
            tb.epoch(epoch, logs)
        if monitor < state["best"]:
            state.update(best=monitor, wait=0, plateau=0)
            backup.save_best()
        else:
            state["wait"] += 1
            state["plateau"] += 1
            if plateau and state["plateau"] >= cfg.plateau_patience:  # as Keras's ReduceLROnPlateau
                state["lr"] = max(state["lr"] * cfg.plateau_factor, cfg.min_lr)
                run.opt.learning_rate.assign(state["lr"])
                state["plateau"] = 0
        state["epoch"] = epoch + 1
        backup.save(state)
        if plateau and state["wait"] >= cfg.patience:
            log(f"early stopping after epoch {epoch + 1}")
            break
    if plateau:
        backup.load_best()  # EarlyStopping(restore_best_weights=True)
    if tb is not None:
        tb.close()
    return hist


class _Loop:
    """The optimizer and the distributed train and eval steps of one run."""

    def __init__(self, model, strategy, cfg: FitConfig, decay_steps: int, train, val, tb):
        self.model, self.strategy, self.cfg, self.tb = model, strategy, cfg, tb
        self.mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
        with strategy.scope():
            opt = recipe.optimizer(cfg, decay_steps)
            if self.mixed:  # float16 gradients underflow without it (as Keras's compile does)
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(model.trainable_variables)
        self.opt = opt
        self.bce = keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing, reduction="none")
        self.train_step, self.eval_step = tf.function(self._train_step), tf.function(self._eval_step)
        self.train_dist = _distribute(strategy, train)
        self.val_dist = _distribute(strategy, val) if val is not None else None
        self.endless = iter(self.train_dist) if cfg.steps_per_epoch else None
        self.state: dict = {}

    def _sums(self, x, y, training):
        p = tf.cast(self.model(x, training=training), tf.float32)
        y = tf.reshape(tf.cast(y, tf.float32), [-1, 1])
        per = self.bce(y, p)
        correct = tf.reduce_sum(tf.cast(tf.equal(p > 0.5, y > 0.5), tf.float32))
        return per, correct, tf.cast(tf.shape(y)[0], tf.float32)

    def _train_step(self, x, y):
        model, opt = self.model, self.opt

        def step(x, y):
            with tf.GradientTape() as tape:
                per, correct, n = self._sums(x, y, True)
                loss = tf.reduce_sum(per) / self.cfg.batch_size  # mean over the GLOBAL batch
                scaled = opt.scale_loss(loss) if self.mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return tf.reduce_sum(per), correct, n
        return [self.strategy.reduce("SUM", v, axis=None) for v in self.strategy.run(step, args=(x, y))]

    def _eval_step(self, x, y):
        def step(x, y):
            per, correct, n = self._sums(x, y, False)
            return tf.reduce_sum(per), correct, n
        return [self.strategy.reduce("SUM", v, axis=None) for v in self.strategy.run(step, args=(x, y))]

    def _train_epoch(self):
        total = np.zeros(3)
        steps = self.cfg.steps_per_epoch
        batches = (next(self.endless) for _ in range(steps)) if self.endless is not None else self.train_dist
        for x, y in batches:
            total += [float(v) for v in self.train_step(x, y)]
            self.state["steps"] = self.state.get("steps", 0) + 1  # not opt.iterations: loss scaling may skip a step
            if self.tb is not None:
                self.tb.step(self.state["steps"], lambda: (total[0] / max(total[2], 1), current_lr(self.opt)))
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    def _evaluate(self):
        total = np.zeros(3)
        for x, y in self.val_dist:
            total += [float(v) for v in self.eval_step(x, y)]
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    def epoch_logs(self):
        """One epoch of training (and validation): its logs and the monitored loss."""
        logs = {}
        logs["loss"], logs["accuracy"] = self._train_epoch()
        logs["learning_rate"] = current_lr(self.opt)
        monitor = logs["loss"]
        if self.val_dist is not None:
            logs["val_loss"], logs["val_accuracy"] = self._evaluate()
            monitor = logs["val_loss"]
        return logs, monitor


class _Backup:
    """Weights, optimizer state and loop state after each epoch, and the best weights."""

    def __init__(self, folder: str, model, opt):
        self.folder, self.model, self.opt = folder, model, opt
        self.best = files.join(folder, "best.weights.h5")

    def restore(self, strategy, log) -> dict | None:
        state_file = files.join(self.folder, "state.json")
        saved = json.loads(files.read_text(state_file)) if files.exists(state_file) else None
        # Every worker keeps its own backup: resume only when all of them stopped after the same
        # epoch (else all start over), so their collectives stay in step.
        if not (distribution.same_everywhere(strategy, saved["epoch"] if saved else 0)
                and distribution.agree(strategy, saved is not None)):
            return None
        self.model.load_weights(files.join(self.folder, "latest.weights.h5"))
        opt_vars = files.load_npz(files.join(self.folder, "optimizer.npz"))
        for v, k in zip(self.opt.variables, sorted(opt_vars, key=lambda s: int(s.split("_")[1]))):
            v.assign(opt_vars[k])
        log(f"restored backup: resuming after epoch {saved['epoch']}")
        return saved

    def save_best(self):
        files.makedirs(self.folder)
        self.model.save_weights(self.best)

    def save(self, state: dict):
        files.makedirs(self.folder)
        self.model.save_weights(files.join(self.folder, "latest.weights.h5"))
        files.save_npz(files.join(self.folder, "optimizer.npz"),
                       **{f"v_{i}": v.numpy() for i, v in enumerate(self.opt.variables)})
        # Atomic (temp name + rename): the epoch counts only once all files are written.
        files.write_text(files.join(self.folder, "state.json"), json.dumps(state))

    def load_best(self):
        if files.exists(self.best):
            self.model.load_weights(self.best)
