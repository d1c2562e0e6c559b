"""The training recipe, written once: FitConfig and the optimizer and schedule it makes.

Two schedules (FitConfig.schedule):
  plateau  Adam at `lr`, the rate times `plateau_factor` after `plateau_patience` flat epochs
           (not below `min_lr`), early stopping after `patience` with the best weights
           restored, monitored on validation (train's stages)
  cosine   Adam with cosine decay to 0 over a fixed number of epochs (after `warmup_epochs` of
           linear warm-up from 0), no early stopping: the validation data only watches, so
           out-of-fold predictions stay honest (k-fold heads, a distilled student)
`weight_decay` > 0 makes it AdamW (decoupled decay; biases and BatchNorm scales are not decayed).

fit.py runs it through model.fit with Keras callbacks; loop.py (multi-worker) by hand.
"""

from __future__ import annotations

import dataclasses

import keras

from catdog_tf.config import SCHEDULES


@dataclasses.dataclass
class FitConfig:
    epochs: int
    lr: float
    batch_size: int  # global batch
    schedule: str = "plateau"
    patience: int = 6  # early stopping, in epochs without a better monitored loss
    plateau_factor: float = 0.3
    plateau_patience: int = 2
    min_lr: float = 1e-7
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0  # cosine only
    weight_decay: float = 0.0
    seed: int = 0  # shuffling of array data
    steps_per_epoch: int | None = None  # dataset data only; it must then repeat
    jit: bool = False
    profile_batches: tuple[int, int] | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")


def learning_rate(cfg: FitConfig, decay_steps: int):
    """The rate, or its schedule over the whole run's `decay_steps` optimizer steps (cosine)."""
    if cfg.schedule != "cosine":
        return cfg.lr
    warmup = min(int(round(decay_steps * cfg.warmup_epochs / max(cfg.epochs, 1))), decay_steps)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, max(decay_steps - warmup, 1), warmup_target=cfg.lr,
                                                  warmup_steps=warmup)


def optimizer(cfg: FitConfig, decay_steps: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(cfg, decay_steps)
    if not cfg.weight_decay:
        return keras.optimizers.Adam(lr)
    opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def plateau_callbacks(cfg: FitConfig, monitor: str) -> list:
    """The plateau schedule as Keras callbacks (none for cosine)."""
    if cfg.schedule != "plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                                              min_lr=cfg.min_lr, verbose=1),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True,
                                          verbose=1)]
