"""The training recipe, written once: FitConfig and the optimizer and schedule it makes.

Two schedules (FitConfig.schedule):
  plateau  Adam at `lr`, the rate times `plateau_factor` after `plateau_patience` flat epochs
           (not below `min_lr`), early stopping after `patience` with the best weights
           restored, monitored on validation (train's stages)
  cosine   Adam with cosine decay to 0 over a fixed number of epochs, no early stopping: the
           validation data only watches, so out-of-fold predictions stay honest (k-fold heads)

fit.py runs it through model.fit with Keras callbacks; loop.py (multi-worker) by hand.
"""

from __future__ import annotations

import dataclasses

import keras

SCHEDULES = ("plateau", "cosine")


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
    seed: int = 0  # shuffling of array data
    steps_per_epoch: int | None = None  # dataset data only; it must then repeat
    jit: bool = False
    profile_batches: tuple[int, int] | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")


def optimizer(cfg: FitConfig, decay_steps: int) -> keras.optimizers.Optimizer:
    """decay_steps: the whole run's optimizer steps (cosine)."""
    if cfg.schedule == "cosine":
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps))
    return keras.optimizers.Adam(cfg.lr)


def plateau_callbacks(cfg: FitConfig, monitor: str) -> list:
    """The plateau schedule as Keras callbacks (none for cosine)."""
    if cfg.schedule != "plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                                              min_lr=cfg.min_lr, verbose=1),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True,
                                          verbose=1)]
