"""TensorBoard scalars a user can trust across stages: `tensorboard --logdir runs`.

One run folder holds `train/` and `validation/` event files. Steps and epochs are global:
stage 2 continues where stage 1 ended (its offsets come from stage 1's record), so the
curves of both stages form one line. Every `every` steps: the running loss, the learning
rate, steps/s and images/s; every epoch: each metric, train and validation side by side.

`ScalarLog` is shared by the Keras path (`KerasTensorBoard`, a callback) and the custom
multi-worker loop (loop.py), so both write the same tags.
"""

from __future__ import annotations

import time
from typing import Callable

import keras
import tensorflow as tf

from catdog_tf import files


class ScalarLog:
    def __init__(self, log_dir: str, every: int = 20, step_offset: int = 0, epoch_offset: int = 0,
                 batch_size: int | None = None):
        self.log_dir, self.every, self.batch_size = log_dir, max(1, int(every)), batch_size
        self.step_offset, self.epoch_offset = int(step_offset), int(epoch_offset)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}
        self._t, self._t_step = time.perf_counter(), None
        self.last_step = 0  # of this stage: the next stage's step offset is step_offset + last_step
        self.last_epoch = 0

    def writer(self, kind: str) -> tf.summary.SummaryWriter:
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(files.join(self.log_dir, kind))
        return self._writers[kind]

    def step(self, step: int, values: Callable[[], tuple[float, float]]) -> None:
        """After optimizer step `step` (1-based, of this stage); values() -> (running loss,
        learning rate) is only called on the steps that are written."""
        self.last_step = step
        if self._t_step is None:
            self._t, self._t_step = time.perf_counter(), step
            return
        if step % self.every:
            return
        now = time.perf_counter()
        rate = (step - self._t_step) / max(now - self._t, 1e-9)
        self._t, self._t_step = now, step
        loss, lr = values()
        with self.writer("train").as_default(step=self.step_offset + step):
            tf.summary.scalar("batch_loss", loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("steps_per_sec", rate)
            if self.batch_size:
                tf.summary.scalar("images_per_sec", rate * self.batch_size)

    def epoch(self, epoch: int, logs: dict) -> None:
        """After epoch `epoch` (0-based, of this stage); val_* keys go to validation/."""
        g = self.epoch_offset + epoch + 1
        self.last_epoch = epoch + 1
        for key, value in logs.items():
            kind, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writer(kind).as_default(step=g):
                tf.summary.scalar(f"epoch_{name}", float(value))
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    if callable(lr) and not isinstance(lr, tf.Variable):  # a schedule
        lr = lr(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(lr))


class KerasTensorBoard(keras.callbacks.Callback):
    """ScalarLog as a Keras callback (+ the profiler over a window of batches). Steps are
    counted from batches, not optimizer.iterations, which stands still when loss scaling
    skips a step."""

    def __init__(self, log: ScalarLog, profile_batches: tuple[int, int] | None = None):
        super().__init__()
        self.log, self.profile = log, profile_batches
        self._epoch, self._count = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._count += 1
        if self.profile and self._count == self.profile[0]:
            tf.profiler.experimental.start(files.join(self.log.log_dir, "train"))
        if self.profile and self._count == self.profile[1]:
            tf.profiler.experimental.stop()
        per_epoch = self.params.get("steps")  # known: a resumed run (BackupAndRestore) keeps its place
        step = self._epoch * per_epoch + batch + 1 if per_epoch else self._count
        opt = self.model.optimizer
        self.log.step(step, lambda: (float((logs or {}).get("loss", float("nan"))), current_lr(opt)))

    def on_epoch_end(self, epoch, logs=None):
        self.log.epoch(epoch, dict(logs or {}))

    def on_train_end(self, logs=None):
        self.log.close()
