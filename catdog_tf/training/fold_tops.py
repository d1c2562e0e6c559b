"""Stage 2 inside k-fold: each fold's top blocks fine-tuned after its head, out of fold.

    python -m catdog_tf.kfold --backbone=efficientnet_lite0 --image_size=380 --pooling=gem \
        --finetune_blocks=1 ... (the k-fold flags as usual)

The backbone is cut below its top --finetune_blocks blocks. The frozen bottom's activations of
every photo and of its mirror image are computed once (float16, cached like pooled features).
For fold k a copy of the pretrained top, under fold k's stage-1 head, is trained on the other
folds' activations (AdamW: decoupled weight decay, warm-up then cosine decay to 0, a fixed
number of epochs, BatchNorm in inference mode) and predicts fold k: out of fold, as the heads.

The member it exports runs the bottom once and every fold's top and head on it; the heads sit
on the fold tops' concatenated features, so one Dense averages the k logits (models/head.py's
layout: `pooled_features` -> head). Each fold's weights are kept under <out>/stage2, so a run
stopped mid-way resumes at the next fold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import keras
import numpy as np
import tensorflow as tf

from catdog_tf import files, metrics
from catdog_tf.models import registry
from catdog_tf.models.head import FEATURES_LAYER, build_head, feature_model_name, make_pooling
from catdog_tf.models.layers import FlipLeftRight
from catdog_tf.training import features
from catdog_tf.training.fit import fit
from catdog_tf.training.recipe import FitConfig


@dataclasses.dataclass
class FoldTops:
    """The fine-tuned member: the frozen bottom, and per fold its top (+ pooling) and head."""
    bottom: keras.Model
    tails: list  # fold k: bottom activations -> pooled features
    heads: list  # fold k: pooled features -> P(dog)
    p_oof: np.ndarray
    fold_losses: list  # fold k: its out-of-fold log loss after stage 2


def bottom_and_top(backbone: str, weights, size: int, k: int) -> tuple[keras.Model, keras.Model]:
    """A new pretrained backbone cut at the input of its top k blocks."""
    model = registry.build_backbone(backbone, weights=weights, include_top=False, image_size=size)
    return registry.split_at_top_blocks(model, backbone, k, bottom_name=feature_model_name(backbone, size, f"bottom{k}"))


def _tail(top: keras.Model, pooling: str, name: str) -> keras.Model:
    """A trainable copy of `top` with its pooling: bottom activations -> pooled features.
    BatchNorm stays frozen (inference mode: the ImageNet statistics survive small batches)."""
    clone = keras.models.clone_model(top)
    clone.set_weights(top.get_weights())
    for layer in clone.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    return keras.Model(clone.input, make_pooling(pooling)(clone.output), name=name)


def _pooled(tail: keras.Model, x: np.ndarray, x_flip: np.ndarray | None) -> np.ndarray:
    """Pooled features of photos from their bottom activations; with mirrors, the mean of both
    (what the exported model feeds its linear head)."""
    f = features.apply(tail, x, f"{tail.name} out of fold")
    return f if x_flip is None else (f + features.apply(tail, x_flip, f"{tail.name} out of fold, mirrored")) / 2


def fine_tune(cfg, out: str, folds: list[str], d, head_weights: np.ndarray, groups: list[str], cache_dir: str,
              log, run_key: dict) -> FoldTops:
    """Stage 2 of every fold (cfg: a KFoldConfig with finetune_blocks > 0). `d`: crossfit's
    stage-1 data (fs, y, targets, fold_idx, excluded), its photos in the order of the cache
    `groups`; head_weights[k] is fold k's head (kernel, bias)."""
    y, targets, fold_idx, excluded = d.y, d.targets, d.fold_idx, d.excluded
    (name, size), = cfg.parts()
    bottom, top = bottom_and_top(name, cfg.weights, size or registry.get(name).input_size, cfg.finetune_blocks)
    size = int(bottom.input_shape[1])
    acts = features.load(bottom, cfg.records, groups, size, flip=True, cache_dir=cache_dir, dtype="float16")
    if list(acts.ids) != list(d.fs.ids):
        raise ValueError(f"{name}: bottom activations list the photos in another order than the pooled features")
    mirror = cfg.tta_flip
    n_train = sum(int(np.prod(w.shape)) for w in _tail(top, cfg.pooling, "probe").trainable_weights)
    log(f"stage 2: top {cfg.finetune_blocks} block(s) of {name} per fold ({n_train:,} trainable weights), "
        f"{cfg.finetune_epochs} epoch(s) at lr {cfg.finetune_lr:g}, weight decay {cfg.weight_decay:g}, on cached "
        f"{tuple(acts.x.shape[1:])} activations of the frozen bottom (photo and mirror image)")
    fit_cfg = FitConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=cfg.batch_size,
                        schedule="cosine", warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay)
    dim = int(head_weights.shape[1] - 1)
    p_oof, tails, heads, losses = np.zeros(len(y)), [], [], []
    t0, done = time.time(), 0
    for k, fold in enumerate(folds):
        tr, va = (fold_idx != k) & ~excluded, fold_idx == k
        tail = _tail(top, cfg.pooling, f"{fold}_top")
        head = build_head(dim, cfg.dropout, seed=cfg.seed + k)
        head.set_weights([head_weights[k, :dim].reshape(dim, 1), head_weights[k, dim:]])
        saved = files.join(out, "stage2", f"{fold}.npz")
        key = _fold_key(run_key, fold)
        if not _load(saved, key, tail, head):
            keras.utils.set_random_seed(cfg.seed + k)
            inp = keras.Input(acts.x.shape[1:])
            stage = keras.Model(inp, head(tail(inp)))
            ds, steps = _batches(acts, np.flatnonzero(tr), targets, cfg.batch_size, cfg.seed + k)
            fit(stage, ds, (acts.x[va], y[va]), dataclasses.replace(fit_cfg, steps_per_epoch=steps), log=log)
            _save(saved, key, tail, head)
            done += 1
        f = _pooled(tail, acts.x[va], acts.x_flip[va] if mirror else None)
        p_oof[va] = np.asarray(head(f, training=False)).reshape(-1)
        losses.append(metrics.log_loss(y[va], p_oof[va]))
        tails.append(tail)
        heads.append(head)
        el = time.time() - t0
        left = len(folds) - k - 1
        log(f"stage 2 fold {k + 1}/{len(folds)} ({fold}): log loss {losses[-1]:.5f} on {int(va.sum())} photos; "
            f"{el:.0f}s, ETA {el / done * left if done else 0:.0f}s")
    return FoldTops(bottom, tails, heads, p_oof, losses)


def _batches(acts: features.FeatureSet, rows: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """(endless shuffled batches of the rows' activations and their mirrors', steps per epoch),
    gathered batch by batch: a concatenated copy (and Keras's float32 one) of the training
    arrays would take several times their size in memory (an 8-fold run of Lite0 at 380 px was
    killed at 15 GB)."""
    n = 2 * len(rows)

    def gen():
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(n)
            for i in range(0, n, batch_size):
                j = order[i:i + batch_size]
                src, r = j >= len(rows), rows[j % len(rows)]
                x = np.where(src[:, None, None, None], acts.x_flip[r], acts.x[r])
                yield x, targets[r].astype(np.float32)

    spec = (tf.TensorSpec((None, *acts.x.shape[1:]), acts.x.dtype), tf.TensorSpec((None,), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(2)
    return ds, -(-n // batch_size)


def _fold_key(run_key: dict, fold: str) -> str:
    return hashlib.sha256(json.dumps({**run_key, "fold": fold}, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _save(path: str, key: str, tail: keras.Model, head: keras.Model) -> None:
    ws = tail.get_weights() + head.get_weights()
    files.save_npz(path, key=np.asarray(key), **{f"w{i}": w for i, w in enumerate(ws)})


def _load(path: str, key: str, tail: keras.Model, head: keras.Model) -> bool:
    """Loads a fold finished by an earlier run with the same settings; False when there is none."""
    if not files.exists(path):
        return False
    z = files.load_npz(path)
    want = [w.shape for w in tail.get_weights() + head.get_weights()]
    ws = [z[f"w{i}"] for i in range(len(want))] if all(f"w{i}" in z for i in range(len(want))) else []
    if str(z.get("key", "")) != key or [w.shape for w in ws] != want:
        return False
    n = len(tail.get_weights())
    tail.set_weights(ws[:n])
    head.set_weights(ws[n:])
    return True


def member_model(tuned: FoldTops, dropout: float, name: str, mirror: bool) -> keras.Model:
    """image -> bottom (and its mirror image) -> every fold's top, pooled (mirror-averaged) ->
    concatenated -> one head whose Dense is the mean of the fold heads: the mean of their logits."""
    size = int(tuned.bottom.input_shape[1])
    inputs = keras.Input((size, size, 3), name="image")
    views = [tuned.bottom(inputs, training=False)]
    if mirror:
        views.append(tuned.bottom(FlipLeftRight(name="mirror")(inputs), training=False))
    feats = []
    for k, tail in enumerate(tuned.tails):
        f = [tail(v, training=False) for v in views]
        feats.append(f[0] if len(f) == 1 else keras.layers.Average(name=f"mirror_average{k}")(f))
    z = feats[0] if len(feats) == 1 else keras.layers.Concatenate(name="fused")(feats)
    z = keras.layers.Identity(name=FEATURES_LAYER)(z)
    kernels = [h.get_weights()[0] for h in tuned.heads]
    head = build_head(sum(int(k.shape[0]) for k in kernels), dropout)
    head.set_weights([np.concatenate(kernels) / len(kernels),
                      np.mean([h.get_weights()[1] for h in tuned.heads], axis=0)])
    return keras.Model(inputs, head(z), name=name)
