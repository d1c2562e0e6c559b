"""K-fold heads on cached frozen features: out-of-fold predictions and one averaged model.

    python -m catdog_tf.kfold --backbone=efficientnet_lite2 --records=runs/records \
        --folds=fold2,fold3,fold4,fold5,fold6,fold7,fold8,fold9 --out=runs/kfold/efficientnet_lite2

For every fold k of --folds a new head (dropout, one sigmoid unit) is trained on the
pooled features of the other folds (and their mirror images) for a fixed number of epochs
with a cosine learning rate: no early stopping, so fold k's prediction is truly out of
fold. The OOF predictions over every photo of --folds are the figure. Folds left out of
--folds (e.g. a held-out fold0+fold1) are never touched.

The export is the average of the k heads on top of the frozen backbone. The head is linear
in the pooled features, so averaging its weights is exactly the logit average of the k
fold models, in one head's cost. --backbone=a+b fuses backbones: their pooled features
are concatenated under one head.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class KFoldConfig:
    backbone: str = "efficientnet_lite0"  # or "a+b+c": feature fusion
    records: str = "records"
    out: str = "runs/kfold"
    folds: list[str] | None = None  # None: every fold of the manifest
    image_size: int | None = None  # None: each backbone's own size (only for a single backbone)
    weights: str | None = "auto"
    epochs: int = 20
    lr: float = 1e-3
    dropout: float = 0.3
    batch_size: int = 64
    flip: bool = True  # also train on the mirror images' features
    seed: int = 0
    cache_dir: str | None = None  # None: <out>/../cache
    # Folds whose features are cached as one file each group, e.g. "fold3+fold4,fold2".
    # Default: one file per fold. Only changes caching (lets runs reuse existing caches).
    cache_groups: list[str] | None = None


def log(msg: str):
    print(f"[kfold {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fold_names(records_dir: str) -> list[str]:
    from catdog_tf import records

    m = records.load_manifest(records_dir)
    if not m.get("folds"):
        raise ValueError(f"{records_dir} was built without --folds: k-fold needs fold0..foldK shards")
    return [f"fold{k}" for k in range(m["folds"])]


def _groups(folds: list[str], cache_groups: list[str] | None) -> list[list[str]]:
    if not cache_groups:
        return [[f] for f in folds]
    groups = [g.split("+") for g in cache_groups]
    flat = [f for g in groups for f in g]
    if sorted(flat) != sorted(folds) or len(set(flat)) != len(flat):
        raise ValueError(f"cache groups {cache_groups} must cover the folds {folds} exactly once")
    return groups


def pooled_model(name: str, weights: str | None, image_size: int | None):
    """Backbone + global average pooling, named as train.py names it so caches are shared."""
    import keras

    from catdog_tf import backbones

    bb = backbones.build_backbone(name, weights=weights, include_top=False, image_size=image_size)
    size = int(bb.input_shape[1])
    return keras.Model(bb.input, keras.layers.GlobalAveragePooling2D(name="pool")(bb.output), name=f"{name}_{size}_avg")


def load_features(cfg: KFoldConfig, folds: list[str]):
    """Pooled features of every photo of `folds` (+ mirror images): (x, x_flip, y, ids, fold
    index), photos in the same order in each array; plus the pooled models."""
    from catdog_tf import features, records

    names = cfg.backbone.split("+")
    if len(names) > 1 and cfg.image_size:
        raise ValueError("--image_size applies to a single backbone, not a fusion")
    cache_dir = cfg.cache_dir or str(Path(cfg.out).parent / "cache")
    models, xs, xfs, y, ids = [], [], [], None, None
    for name in names:
        pm = pooled_model(name, cfg.weights, cfg.image_size)
        size = int(pm.input_shape[1])
        parts, fparts, ys, id_parts = [], [], [], []
        for g in _groups(folds, cfg.cache_groups):
            split = "+".join(g)
            x, yy, ii = features.cached(pm, cfg.records, split, size, cache_dir=cache_dir)
            parts.append(x)
            ys.append(yy)
            id_parts.append(ii)
            if cfg.flip:
                xf, _, iif = features.cached(pm, cfg.records, split, size, flip=True, cache_dir=cache_dir)
                if list(iif) != list(ii):
                    raise ValueError(f"{split}: flipped and plain feature caches list photos in different orders")
                fparts.append(xf)
        x, yy, ii = np.concatenate(parts), np.concatenate(ys), np.concatenate(id_parts)
        if ids is None:
            y, ids = yy, ii
        elif list(ii) != list(ids):
            raise ValueError(f"{name}: photos in a different order than {names[0]}")
        models.append(pm)
        xs.append(x)
        xfs.append(np.concatenate(fparts) if cfg.flip else None)
    x = np.concatenate(xs, axis=1)
    xf = np.concatenate(xfs, axis=1) if cfg.flip else None
    # Which fold each photo is in: from the records themselves, not from the cache grouping.
    fold_of = {ex["id"]: f for f in folds for ex in records.read_examples(cfg.records, f)}
    fold_idx = np.asarray([folds.index(fold_of[i]) for i in ids])
    return models, x, xf, y.astype(np.float32), ids, fold_idx


def train_head(x, y, cfg: KFoldConfig, val=None, seed: int = 0):
    """One head: fixed epochs, Adam with cosine decay; val only monitored (never steers)."""
    import keras

    from catdog_tf.model import build_head

    keras.utils.set_random_seed(seed)
    head = build_head(x.shape[1], cfg.dropout, seed)
    steps = cfg.epochs * int(np.ceil(len(x) / cfg.batch_size))
    head.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.lr, steps)), "binary_crossentropy")
    hist = head.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, validation_data=val, shuffle=True, verbose=0)
    return head, {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def average_heads(heads):
    """One head whose weights are the mean of the heads' (all linear, dropout aside): its
    logit is exactly the mean of their logits."""
    import keras

    avg = keras.models.clone_model(heads[0])
    avg.set_weights([np.mean(ws, axis=0) for ws in zip(*(h.get_weights() for h in heads))])
    return avg


def _result_settings(config: dict) -> dict:
    """The settings that change a run's result (where features are cached does not)."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in ("cache_dir", "cache_groups")}


def run(cfg: KFoldConfig) -> dict:
    from catdog_tf.ensemble import pooled_head_model
    from catdog_tf.evaluate import log_loss

    folds = cfg.folds or fold_names(cfg.records)
    if len(folds) < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {folds}")
    out = Path(cfg.out)
    done = out / "kfold.json"
    if done.exists() and (out / "model.keras").exists():
        report = json.loads(done.read_text())
        if _result_settings(report["config"]) == _result_settings(dataclasses.asdict(cfg)) and report["folds"] == folds:
            log(f"{out} holds a finished run with these settings: nothing to do")
            return report
    out.mkdir(parents=True, exist_ok=True)
    models, x, xf, y, ids, fold_idx = load_features(cfg, folds)
    log(f"{cfg.backbone}: {len(y)} photos in {len(folds)} folds, {x.shape[1]} features"
        f"{' (+ mirror images for training)' if cfg.flip else ''}")
    oof = np.zeros(len(y))
    per_fold, heads = [], []
    t0 = time.time()
    for k, name in enumerate(folds):
        tr, va = fold_idx != k, fold_idx == k
        xt, yt = (np.concatenate([x[tr], xf[tr]]), np.concatenate([y[tr], y[tr]])) if cfg.flip else (x[tr], y[tr])
        head, hist = train_head(xt, yt, cfg, val=(x[va], y[va]), seed=cfg.seed + k)
        # Called directly: predict() would retrace for every new head (and warn each time).
        oof[va] = np.asarray(head(x[va], training=False)).reshape(-1)
        heads.append(head)
        per_fold.append({"fold": name, "count": int(va.sum()), "log_loss": log_loss(y[va], oof[va]),
                         "val_loss_by_epoch": [round(v, 5) for v in hist["val_loss"]]})
        el = time.time() - t0
        log(f"fold {k + 1}/{len(folds)} ({name}): log loss {per_fold[-1]['log_loss']:.5f} on {int(va.sum())} photos; "
            f"{el:.0f}s, ETA {el / (k + 1) * (len(folds) - k - 1):.0f}s")
    report = {"config": dataclasses.asdict(cfg), "folds": folds, "count": int(len(y)),
              "oof_log_loss": log_loss(y, oof), "oof_accuracy": float(np.mean((oof > 0.5) == (y > 0.5))),
              "per_fold": per_fold}
    log(f"{cfg.backbone}: out-of-fold log loss {report['oof_log_loss']:.5f}, accuracy {report['oof_accuracy']:.4f} "
        f"on {len(y)} photos")
    write_oof(out / "oof_predictions.csv", ids, y, [folds[j] for j in fold_idx], oof)

    # Every fold head's weights, for inspection and tests (a few KB).
    np.savez(out / "fold_heads.npz", **{f"{folds[k]}/{j}": w for k, h in enumerate(heads)
                                        for j, w in enumerate(h.get_weights())})
    # The export: frozen backbone(s) -> pooled features -> the k heads averaged (one head).
    model = pooled_head_model(models, average_heads(heads), f"catdog_kfold_{cfg.backbone.replace('+', '_')}")
    model.save(str(out / "model.keras"))
    (out / "kfold.json").write_text(json.dumps(report, indent=1))
    log(f"wrote {out / 'model.keras'} (mean of {len(heads)} fold heads), {out / 'oof_predictions.csv'}")
    return report


OOF_HEADER = "id,label,fold,p_dog"


def write_oof(path, ids, labels, folds, p_dog) -> None:
    with open(path, "w") as f:
        f.write(OOF_HEADER + "\n")
        f.writelines(f"{i},{int(t)},{k},{q:.8f}\n" for i, t, k, q in zip(ids, labels, folds, p_dog))


def read_oof(path: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(ids, labels, folds, p_dog) from a k-fold run's folder or its oof_predictions.csv."""
    p = Path(path)
    if p.is_dir():
        p = p / "oof_predictions.csv"
    ids, ys, folds, ps = [], [], [], []
    with open(p) as f:
        header = f.readline().strip()
        if header != OOF_HEADER:
            raise ValueError(f"{p}: not an out-of-fold predictions file (header {header!r})")
        for line in f:
            i, t, k, q = line.strip().split(",")
            ids.append(i)
            ys.append(float(t))
            folds.append(k)
            ps.append(float(q))
    return ids, np.asarray(ys), folds, np.asarray(ps)


def _define_flags():
    from absl import flags

    flags.DEFINE_string("backbone", "efficientnet_lite0", "Registry name, or names joined with + to fuse features.")
    flags.DEFINE_string("records", "records", "Records folder built with --folds.")
    flags.DEFINE_string("out", None, "Output folder (default runs/kfold/<backbone>).")
    flags.DEFINE_list("folds", None, "Folds to cross-validate over (default: all); others stay untouched.")
    flags.DEFINE_integer("image_size", None, "Input size (default: the backbone's own).")
    flags.DEFINE_string("weights", "auto", "Backbone weights: auto, imagenet, none or a file.")
    flags.DEFINE_integer("epochs", 20, "Epochs per fold head (fixed: no early stopping).")
    flags.DEFINE_float("lr", 1e-3, "Peak Adam learning rate (cosine decay to 0).")
    flags.DEFINE_float("dropout", 0.3, "Dropout on the pooled features.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_bool("flip", True, "Also train on the mirror images' features.")
    flags.DEFINE_integer("seed", 0, "Seed (fold k uses seed + k).")
    flags.DEFINE_string("cache_dir", None, "Feature cache (default <out>/../cache; shared with train).")
    flags.DEFINE_list("cache_groups", None, "Cache these groups of folds as one file each, e.g. "
                      "fold2,fold3+fold4 (default: one file per fold).")


def main(argv):
    from absl import flags

    from catdog_tf.backbones import WeightsUnavailableError
    from catdog_tf.records import RecordsError

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    cfg = KFoldConfig(F.backbone, F.records, F.out or f"runs/kfold/{F.backbone.replace('+', '_')}", F.folds,
                      F.image_size, None if F.weights == "none" else F.weights, F.epochs, F.lr, F.dropout,
                      F.batch_size, F.flip, F.seed, F.cache_dir, F.cache_groups)
    try:
        report = run(cfg)
    except (WeightsUnavailableError, RecordsError, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps({k: report[k] for k in ("count", "oof_log_loss", "oof_accuracy")}))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
