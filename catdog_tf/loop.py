"""A small distributed training loop for MultiWorkerMirroredStrategy.

Keras 3.15's model.fit/evaluate fail under MultiWorkerMirroredStrategy (keras-team/keras
#20585: the symbolic build and the metric reductions mishandle PerReplica values), so
multi-host runs train with this loop: strategy.run per step, SUM all-reduce of losses,
and the callbacks training needs re-done plainly: best weights on validation log loss,
ReduceLROnPlateau, EarlyStopping (restore best) and backup/restore per epoch.
The backup lives in the (shared) model dir, like Keras's BackupAndRestore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


class History:
    """What keras.callbacks.History offers that train.py reads."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []


def fit(model: keras.Model, strategy: tf.distribute.Strategy, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
        *, epochs: int, lr: float, global_batch: int, backup_dir: str, patience: int = 6, label_smoothing: float = 0.0,
        log=print) -> History:
    """train_ds / val_ds: global batches of (x, y); they are distributed here. Every worker
    keeps its own backup_dir (non-chief workers: a scratch folder), as Keras does."""
    with strategy.scope():
        opt = keras.optimizers.Adam(lr)
        opt.build(model.trainable_variables)
    bce = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, reduction="none")

    def sums(x, y, training):
        p = tf.cast(model(x, training=training), tf.float32)
        y = tf.reshape(tf.cast(y, tf.float32), [-1, 1])
        per = bce(y, p)
        correct = tf.reduce_sum(tf.cast(tf.equal(p > 0.5, y > 0.5), tf.float32))
        return per, correct, tf.cast(tf.shape(y)[0], tf.float32)

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                per, correct, n = sums(x, y, True)
                loss = tf.reduce_sum(per) / global_batch  # mean over the GLOBAL batch
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return tf.reduce_sum(per), correct, n
        return [strategy.reduce("SUM", v, axis=None) for v in strategy.run(step, args=(x, y))]

    @tf.function
    def eval_step(x, y):
        def step(x, y):
            per, correct, n = sums(x, y, False)
            return tf.reduce_sum(per), correct, n
        return [strategy.reduce("SUM", v, axis=None) for v in strategy.run(step, args=(x, y))]

    def run(ds, fn):
        total = np.zeros(3)
        for x, y in strategy.experimental_distribute_dataset(ds):
            total += [float(v) for v in fn(x, y)]
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    backup = Path(backup_dir)
    state = {"epoch": 0, "best": float("inf"), "wait": 0, "plateau": 0, "lr": lr}
    if (backup / "state.json").exists():  # resume where a killed run stopped
        state = json.loads((backup / "state.json").read_text())
        model.load_weights(str(backup / "latest.weights.h5"))
        opt_vars = np.load(backup / "optimizer.npz")
        for v, k in zip(opt.variables, sorted(opt_vars.files, key=lambda s: int(s.split("_")[1]))):
            v.assign(opt_vars[k])
        log(f"restored backup: resuming after epoch {state['epoch']}")
    opt.learning_rate.assign(state["lr"])
    best_path = backup / "best.weights.h5"
    hist = History()
    for epoch in range(state["epoch"], epochs):
        loss, acc = run(train_ds, train_step)
        logs = {"loss": loss, "accuracy": acc, "learning_rate": float(opt.learning_rate.numpy())}
        monitor = loss
        if val_ds is not None:
            logs["val_loss"], logs["val_accuracy"] = run(val_ds, eval_step)
            monitor = logs["val_loss"]
        log(f"epoch {epoch + 1}/{epochs}: " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        for k, v in logs.items():
            hist.history.setdefault(k, []).append(v)
        hist.epoch.append(epoch)
        if monitor < state["best"]:
            state.update(best=monitor, wait=0, plateau=0)
            backup.mkdir(parents=True, exist_ok=True)
            model.save_weights(str(best_path))
        else:
            state["wait"] += 1
            state["plateau"] += 1
            if state["plateau"] >= 2:  # ReduceLROnPlateau(factor=0.3, patience=2)
                state["lr"] = max(state["lr"] * 0.3, 1e-7)
                opt.learning_rate.assign(state["lr"])
                state["plateau"] = 0
        state["epoch"] = epoch + 1
        backup.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(backup / "latest.weights.h5"))
        np.savez(backup / "optimizer.npz", **{f"v_{i}": v.numpy() for i, v in enumerate(opt.variables)})
        tmp = backup / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, backup / "state.json")  # the epoch counts only once all files are written
        if state["wait"] >= patience:
            log(f"early stopping after epoch {epoch + 1}")
            break
    if best_path.exists():
        model.load_weights(str(best_path))  # EarlyStopping(restore_best_weights=True)
    return hist
