"""The training loop for MultiWorkerMirroredStrategy.

Keras 3.15's model.fit/evaluate fail under MultiWorkerMirroredStrategy (keras-team/keras
#20585: the symbolic build and the metric reductions mishandle PerReplica values), so
multi-host runs train with this loop: strategy.run per step, SUM all-reduce of losses,
and what fit.py's callbacks do re-done plainly: best weights on validation log loss,
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
        val: tf.data.Dataset | None, *, epochs: int, lr: float, global_batch: int, backup_dir: str,
        schedule: str = "plateau", decay_steps: int | None = None, patience: int = 6,
        label_smoothing: float = 0.0, steps_per_epoch: int | None = None, tb: ScalarLog | None = None,
        log=print) -> History:
    """train: a dataset function or a dataset of global batches of (x, y) (with steps_per_epoch
    it must repeat: one iterator runs across epochs); val: a dataset of global batches.
    Every worker keeps its own backup_dir (non-chief workers: a scratch folder), as Keras does."""
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    with strategy.scope():
        if schedule == "cosine":  # decay_steps: the whole run's optimizer steps
            opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, decay_steps))
        else:
            opt = keras.optimizers.Adam(lr)
        if mixed:  # float16 gradients underflow without it (as Keras's compile does)
            opt = keras.optimizers.LossScaleOptimizer(opt)
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
                scaled = opt.scale_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return tf.reduce_sum(per), correct, n
        return [strategy.reduce("SUM", v, axis=None) for v in strategy.run(step, args=(x, y))]

    @tf.function
    def eval_step(x, y):
        def step(x, y):
            per, correct, n = sums(x, y, False)
            return tf.reduce_sum(per), correct, n
        return [strategy.reduce("SUM", v, axis=None) for v in strategy.run(step, args=(x, y))]

    train_dist = _distribute(strategy, train)
    val_dist = _distribute(strategy, val) if val is not None else None
    endless = iter(train_dist) if steps_per_epoch else None

    def run_train():
        total = np.zeros(3)
        batches = (next(endless) for _ in range(steps_per_epoch)) if endless is not None else train_dist
        for x, y in batches:
            total += [float(v) for v in train_step(x, y)]
            state["steps"] = state.get("steps", 0) + 1  # not opt.iterations: loss scaling may skip a step
            if tb is not None:
                tb.step(state["steps"], lambda: (total[0] / max(total[2], 1), current_lr(opt)))
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    def run_eval():
        total = np.zeros(3)
        for x, y in val_dist:
            total += [float(v) for v in eval_step(x, y)]
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    backup = str(backup_dir)
    state = {"epoch": 0, "best": float("inf"), "wait": 0, "plateau": 0, "lr": lr}
    saved = json.loads(files.read_text(files.join(backup, "state.json"))) \
        if files.exists(files.join(backup, "state.json")) else None
    # Every worker keeps its own backup: resume only when all of them stopped after the same
    # epoch (else all start over), so their collectives stay in step.
    if distribution.same_everywhere(strategy, saved["epoch"] if saved else 0) and \
            distribution.agree(strategy, saved is not None):  # resume where a killed run stopped
        state = saved
        model.load_weights(files.join(backup, "latest.weights.h5"))
        opt_vars = files.load_npz(files.join(backup, "optimizer.npz"))
        for v, k in zip(opt.variables, sorted(opt_vars, key=lambda s: int(s.split("_")[1]))):
            v.assign(opt_vars[k])
        log(f"restored backup: resuming after epoch {state['epoch']}")
    if schedule != "cosine":
        opt.learning_rate.assign(state["lr"])
    best_path = files.join(backup, "best.weights.h5")
    hist = History()
    for epoch in range(state["epoch"], epochs):
        logs = {}
        logs["loss"], logs["accuracy"] = run_train()
        logs["learning_rate"] = current_lr(opt)
        monitor = logs["loss"]
        if val_dist is not None:
            logs["val_loss"], logs["val_accuracy"] = run_eval()
            monitor = logs["val_loss"]
        log(f"epoch {epoch + 1}/{epochs}: " + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items()))
        for k, v in logs.items():
            hist.history.setdefault(k, []).append(v)
        hist.epoch.append(epoch)
        if tb is not None:
            tb.epoch(epoch, logs)
        if monitor < state["best"]:
            state.update(best=monitor, wait=0, plateau=0)
            files.makedirs(backup)
            model.save_weights(best_path)
        else:
            state["wait"] += 1
            state["plateau"] += 1
            if state["plateau"] >= 2 and schedule != "cosine":  # ReduceLROnPlateau(factor=0.3, patience=2)
                state["lr"] = max(state["lr"] * 0.3, 1e-7)
                opt.learning_rate.assign(state["lr"])
                state["plateau"] = 0
        state["epoch"] = epoch + 1
        files.makedirs(backup)
        model.save_weights(files.join(backup, "latest.weights.h5"))
        files.save_npz(files.join(backup, "optimizer.npz"), **{f"v_{i}": v.numpy() for i, v in enumerate(opt.variables)})
        # Atomic (temp name + rename): the epoch counts only once all files are written.
        files.write_text(files.join(backup, "state.json"), json.dumps(state))
        if schedule != "cosine" and state["wait"] >= patience:
            log(f"early stopping after epoch {epoch + 1}")
            break
    if schedule != "cosine" and files.exists(best_path):
        model.load_weights(best_path)  # EarlyStopping(restore_best_weights=True)
    if tb is not None:
        tb.close()
    return hist
