"""ImageNet-1k class names (offline), prediction decoding and the cat/dog groups.

Names ship in catdog_tf/models/imagenet_classes.tsv, in the canonical order used by
Keras/TF models (sorted WordNet ids). It was generated once from the files that
tensorflow-datasets installs (datasets/imagenet2012/labels.txt for the ids and
datasets/siscore/labels.py for the names), so no download and no heavy
tensorflow_datasets import is needed at run time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

__all__ = ["CAT_CLASSES", "DOG_CLASSES", "class_names", "wordnet_ids", "short_name",
           "decode_predictions", "cat_dog_probs", "dog_score", "group_of"]

NUM_CLASSES = 1000
# Domestic cats (tabby .. Egyptian cat) and dog breeds (Chihuahua .. Mexican
# hairless). Big cats, wolves and foxes are deliberately left out.
CAT_CLASSES = range(281, 286)
DOG_CLASSES = range(151, 269)


@functools.lru_cache(maxsize=None)
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = (Path(__file__).parent / "imagenet_classes.tsv").read_text("utf-8")
    wnids, names = [], []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        idx, wnid, name = line.split("\t")
        if int(idx) != len(names):
            raise ValueError(f"imagenet_classes.tsv out of order at line {line!r}")
        wnids.append(wnid)
        names.append(name)
    if len(names) != NUM_CLASSES:
        raise ValueError(f"imagenet_classes.tsv has {len(names)} classes, expected {NUM_CLASSES}")
    return tuple(wnids), tuple(names)


def class_names() -> tuple[str, ...]:
    """The 1000 names ("tabby, tabby cat", ...) indexed by class id."""
    return _table()[1]


def wordnet_ids() -> tuple[str, ...]:
    """The 1000 WordNet ids ("n01440764", ...) indexed by class id."""
    return _table()[0]


def short_name(index: int) -> str:
    """First synonym only: "tabby" for 281."""
    return class_names()[index].split(",")[0]


def _as_2d(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected (batch, {NUM_CLASSES}) probabilities, got shape {p.shape}")
    return p


def decode_predictions(probs, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Per row, the `top` classes as (index, name, probability), best first."""
    p = _as_2d(probs)
    names = class_names()
    out = []
    for row in p:
        best = np.argsort(-row, kind="stable")[:top]
        out.append([(int(i), names[i], float(row[i])) for i in best])
    return out


def cat_dog_probs(probs) -> tuple[np.ndarray, np.ndarray]:
    """Summed probability of the cat classes and of the dog classes, per row."""
    p = _as_2d(probs)
    return (p[:, CAT_CLASSES.start:CAT_CLASSES.stop].sum(axis=1),
            p[:, DOG_CLASSES.start:DOG_CLASSES.stop].sum(axis=1))


def dog_score(probs, eps: float = 1e-12) -> np.ndarray:
    """P(dog | cat or dog) per row: a zero-shot cats-vs-dogs score from ImageNet."""
    cat, dog = cat_dog_probs(probs)
    return (dog + eps) / (cat + dog + 2 * eps)


def group_of(index: int) -> str:
    """"cat", "dog" or "other" for a class index."""
    if index in CAT_CLASSES:
        return "cat"
    if index in DOG_CLASSES:
        return "dog"
    return "other"
