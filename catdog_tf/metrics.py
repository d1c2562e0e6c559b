"""The metrics, once: Kaggle's log loss, accuracy, probability clipping and logits.

NumPy (and scipy's expit) only, so every layer of the package (training, inference, tools, benchmarks) can use it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

KAGGLE_EPS = 1e-15  # Kaggle clips submissions to [eps, 1 - eps] before scoring
LOGIT_EPS = 1e-7  # float32 logits of probabilities: 1 - 1e-7 is still distinct from 1 in float32


def log_loss(y, p, eps: float = KAGGLE_EPS) -> float:
    """Kaggle's formula: -mean(y log p + (1-y) log(1-p)), p clipped to [eps, 1-eps]."""
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def per_example_log_loss(y, p, eps: float = KAGGLE_EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    y = np.asarray(y, np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def accuracy(y, p) -> float:
    y, p = np.asarray(y), np.asarray(p)
    return float(np.mean((p > 0.5) == (y > 0.5))) if len(y) else float("nan")


def logit(p, eps: float = LOGIT_EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p) - np.log(1 - p)


def sigmoid(z) -> np.ndarray:
    return expit(np.asarray(z, np.float64))


def bootstrap_ci(y, p, n_boot: int = 2000, seed: int = 0, eps: float = KAGGLE_EPS) -> list[float]:
    """95 % percentile-bootstrap interval of the log loss: photos resampled with replacement.
    A few confident mistakes carry much of the loss, so the interval is wide and skewed."""
    per = per_example_log_loss(y, p, eps)
    if len(per) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = np.concatenate([per[rng.integers(0, len(per), (min(200, n_boot - b), len(per)))].mean(axis=1)
                            for b in range(0, n_boot, 200)])
    return [float(v) for v in np.percentile(means, [2.5, 97.5])]
