"""K-fold heads on cached frozen features: out-of-fold predictions and one averaged model.

    python -m catdog_tf.kfold --backbone=efficientnet_lite2 --records=runs/records \
        --folds=fold2,fold3,fold4,fold5,fold6,fold7,fold8,fold9 --out=runs/kfold/efficientnet_lite2

For every fold k of --folds a new head (dropout, one sigmoid unit) is trained on the
pooled features of the other folds (and their mirror images) for a fixed number of epochs
with a cosine learning rate (recipe.py's "cosine" schedule): no early stopping, so fold k's
prediction is truly out of fold. The OOF predictions over every photo of --folds are the
figure. Folds left out of --folds (e.g. a held-out fold0+fold1) are never touched.

The export is the average of the k heads on top of the frozen backbone (models/head.py):
exactly the logit average of the k fold models, in one head's cost. --backbone=a+b fuses
backbones: their pooled features are concatenated under one head.

Under a multi-worker strategy (TF_CONFIG) each worker extracts its share of the photos and fits
its share of the folds; all-reduces give every worker everything, and the chief writes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
import tensorflow as tf

from catdog_tf import contracts, distribution, files, identity, metrics
from catdog_tf.config import default_cache_dir, FINETUNE_ONLY, KFoldConfig, NO_WEIGHTS
from catdog_tf.data import manifest, oof
from catdog_tf.errors import UserError
from catdog_tf.models import imagenet
from catdog_tf.models.head import average_heads, build_head, imagenet_classifier, pooled_head_model, pooled_model
from catdog_tf.training import features, fold_tops
from catdog_tf.training.fit import fit_head, fit_logistic
from catdog_tf.training.recipe import FitConfig
from catdog_tf.training.tblog import ScalarLog



def log(msg: str):
    print(f"[kfold {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fold_names(records_dir: str) -> list[str]:
    m = manifest.load_manifest(records_dir)
    if not m.get("folds"):
        raise UserError(f"{records_dir} was built without --folds: k-fold needs fold0..foldK shards")
    return [f"fold{k}" for k in range(m["folds"])]


def _groups(folds: list[str], cache_groups: list[str] | None) -> list[str]:
    """The splits whose features are cached as one file each ('+' joins folds)."""
    if not cache_groups:
        return list(folds)
    flat = [f for g in cache_groups for f in g.split("+")]
    if sorted(flat) != sorted(folds) or len(set(flat)) != len(flat):
        raise UserError(f"cache groups {cache_groups} must cover the folds {folds} exactly once")
    return list(cache_groups)


def load_features(cfg: KFoldConfig, folds: list[str], strategy=None):
    """Pooled features of every photo of `folds`, backbones side by side: (feature models,
    FeatureSet, fold index of each photo, excluded-from-training mask, ImageNet [cat, dog]
    mass per photo from the first backbone's classifier or None). Extracted under `strategy`
    (each worker its share, every local device its slice of each batch)."""
    strategy = strategy or tf.distribute.get_strategy()
    try:
        parts = cfg.parts()
    except ValueError as e:
        raise UserError(str(e)) from None
    cache_dir = cfg.cache_dir or default_cache_dir(cfg.resolved_out())
    models, sets = [], []
    for name, size in parts:
        with strategy.scope():
            pm = pooled_model(name, cfg.weights, size, cfg.pooling)
        fs = features.load(pm, cfg.records, _groups(folds, cfg.cache_groups), int(pm.input_shape[1]),
                           flip=cfg.flip or cfg.tta_flip, cache_dir=cache_dir, strategy=strategy)
        if sets and list(fs.ids) != list(sets[0].ids):
            raise ValueError(f"{name}: photos in a different order than {parts[0][0]}")
        models.append(pm)
        sets.append(fs)
    fused = features.FeatureSet(np.concatenate([s.x for s in sets], axis=1), sets[0].y.astype(np.float32),
                                sets[0].ids,
                                np.concatenate([s.x_flip for s in sets], axis=1) if sets[0].x_flip is not None else None)
    # Which fold each photo is in: from the records themselves, not from the cache grouping.
    fold_of = {ex["id"]: f for f in folds for ex in manifest.read_examples(cfg.records, f)}
    fold_idx = np.asarray([folds.index(fold_of[i]) for i in fused.ids])
    excluded = np.isin(fused.ids.astype(str), manifest.excluded_ids(cfg.records))
    # A fusion has no single ImageNet classifier on its features (and the ensemble's hedge needs one);
    # the classifier was trained on average-pooled features, so GeM ones get none either.
    clf = imagenet_classifier(parts[0][0], cfg.weights, parts[0][1]) \
        if len(parts) == 1 and cfg.pooling == "avg" else None
    # On the features the exported model computes: with tta_flip, the mean of the image's and its mirror's.
    x0 = sets[0].mirror_mean() if cfg.tta_flip else sets[0].x
    masses = None if clf is None else np.stack(imagenet.cat_dog_probs(np.asarray(clf(x0))), axis=1)
    return models, fused, fold_idx, excluded, masses


# Settings added since runs were made, at the value that gives an older run's behaviour.
_BEFORE = {"tta_flip": False, "pooling": "avg"}


def _result_settings(config: dict) -> dict:
    """The settings that change a run's result (where features are cached does not); a setting
    added since a run was made counts at its default."""
    full = {**json.loads(json.dumps(dataclasses.asdict(KFoldConfig()))), **_BEFORE, **json.loads(json.dumps(config))}
    unused = _ADAM_ONLY if full["head"] == "lbfgs" else ("l2",)  # settings the chosen head never reads
    unused += () if full["finetune_blocks"] else FINETUNE_ONLY
    return {k: v for k, v in full.items() if k not in ("cache_dir", "cache_groups", "strategy", *unused)}


_ADAM_ONLY = ("epochs", "lr", "batch_size", "seed", "dropout")


def run(cfg: KFoldConfig) -> dict:
    folds = cfg.folds or fold_names(cfg.records)
    if len(folds) < 2:
        raise UserError(f"k-fold needs at least 2 folds, got {folds}")
    out = cfg.resolved_out()
    files.check_out(out, "kfold", {"records": cfg.records, "soft_targets": cfg.soft_targets,
                                   "weights": cfg.weights})
    if cfg.weights in NO_WEIGHTS:
        log("WARNING: --weights=none: the heads learn on features of a random backbone; for real results use "
            "--weights=auto (pretrained)")
    strategy, w = distribution.choose(cfg.strategy, log)
    if cfg.finetune_blocks and w.count > 1:
        raise UserError("--finetune_blocks runs on one worker (each fold's top trains there); run it without TF_CONFIG")
    report = _finished(cfg, out, folds)
    # Decided together: a worker that went on alone would wait for the others' collectives forever.
    if distribution.agree(strategy, report is not None):
        log(f"{out} holds a finished run with these settings: nothing to do")
        return report
    models, fs, fold_idx, excluded, masses = load_features(cfg, folds, strategy)
    log(f"{cfg.backbone}: {len(fs.y)} photos in {len(folds)} folds ({int(excluded.sum())} kept out of training, "
        f"predicted out of fold like the rest), {fs.x.shape[1]} features"
        f"{' (+ mirror images for training)' if cfg.flip else ''}")
    y = contracts.labels(fs.y, f"{cfg.records}: folds {','.join(folds)}", fs.ids)
    d = _Data(fs, y, y if cfg.soft_targets is None else oof.teacher_targets([cfg.soft_targets], list(fs.ids)), fold_idx, excluded,
              # Scored as the exported model scores: with tta_flip, the mean features of image and
              # mirror give the mean of their logits (the head is linear).
              fs.mirror_mean() if cfg.tta_flip else fs.x)
    # Folds are spread over the workers; each head fits on one device. A head is one Dense unit
    # on cached features, so its time is per-step overhead that more replicas only add to
    # (BUILD.md: 28 ms a step under two local workers vs 1.2 ms on one device).
    mine = [k for k in range(len(folds)) if k % w.count == w.rank]
    if w.count > 1:
        log(f"worker {w.rank}/{w.count} fits the heads of {', '.join(folds[k] for k in mine)}; the others' "
            "arrive by all-reduce")
    p_oof, weights, val_losses = _fit_heads(cfg, out, folds, mine, d, w.chief)
    if w.count > 1:  # every worker gets every fold's head and predictions
        p_oof, weights, val_losses = _gather(strategy, w.chief, out, folds, mine, fold_idx, p_oof, weights, val_losses)
    tuned = None
    if cfg.finetune_blocks:
        stage1 = metrics.log_loss(y, p_oof)
        log(f"stage 1 (heads): out-of-fold log loss {stage1:.5f}")
        tuned = fold_tops.fine_tune(cfg, out, folds, d, weights, _groups(folds, cfg.cache_groups),
                                    cfg.cache_dir or default_cache_dir(out), log, _run_key(cfg, folds))
        p_oof = tuned.p_oof
    report = _report(cfg, folds, d, p_oof, val_losses)
    if tuned is not None:
        report["stage1_oof_log_loss"] = stage1
        for row, loss in zip(report["per_fold"], tuned.fold_losses):
            row["stage2_log_loss"] = loss
    log(f"{cfg.backbone}: out-of-fold log loss {report['oof_log_loss']:.5f} (95% CI {report['oof_log_loss_ci95'][0]:.5f}"
        f"-{report['oof_log_loss_ci95'][1]:.5f}), accuracy {report['oof_accuracy']:.4f} on all {len(y)} photos; "
        f"{report['cleaned_oof_log_loss']:.5f} without the {int(excluded.sum())} excluded")
    if not w.chief:  # every worker holds every head and prediction; one writes them
        log(f"worker {w.rank}/{w.count}: done; the chief writes {out}")
        return report
    oof.write_oof(files.join(out, oof.FILE), fs.ids, y, [folds[j] for j in fold_idx], p_oof, excluded, masses)
    _write_model(cfg, out, models, folds, weights, fs.x.shape[1], report, tuned)
    return report


@dataclasses.dataclass
class _Data:
    fs: features.FeatureSet
    y: np.ndarray
    targets: np.ndarray  # y, or a teacher's P(dog)
    fold_idx: np.ndarray
    excluded: np.ndarray
    xs: np.ndarray  # the features a head is scored on


def _fit_heads(cfg: KFoldConfig, out: str, folds: list[str], mine: list[int], d: _Data, chief: bool):
    """This worker's fold heads: (out-of-fold P(dog) [n], heads' kernel and bias [folds, dim + 1],
    validation loss by epoch [folds, epochs]); rows of other workers' folds stay 0."""
    x, xf, y, xs = d.fs.x, d.fs.x_flip, d.y, d.xs
    fit_cfg = FitConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, schedule="cosine")
    p_oof = np.zeros(len(y))
    weights = np.zeros((len(folds), x.shape[1] + 1), np.float32)
    val_losses = np.zeros((len(folds), cfg.epochs if cfg.head == "adam" else 1), np.float32)  # lbfgs: its end
    t0 = time.time()
    for done_k, k in enumerate(mine):
        name = folds[k]
        tr, va = (d.fold_idx != k) & ~d.excluded, d.fold_idx == k
        if len(set(y[tr].tolist())) < 2:  # nothing (or one class) left to train on: a NaN or constant head
            raise UserError(f"{name}: the other folds hold {int(tr.sum())} trainable photo(s) without both "
                            "classes (too many excluded?)")
        t = d.targets[tr]
        xt, yt = (np.concatenate([x[tr], xf[tr]]), np.concatenate([t, t])) if cfg.flip else (x[tr], t)
        if cfg.head == "lbfgs":
            head, history = fit_logistic(xt, yt, cfg.l2, (xs[va], y[va]), cfg.dropout)
        else:
            head, hist = fit_head(xt, yt, (xs[va], y[va]), fit_cfg, dropout=cfg.dropout, seed=cfg.seed + k,
                                  verbose=0, log=log,
                                  tb=ScalarLog(files.join(out, "tensorboard", name)) if chief else None)
            history = hist.history
        # Called directly: predict() would retrace for every new head (and warn each time).
        p_oof[va] = np.asarray(head(xs[va], training=False)).reshape(-1)
        kernel, bias = head.get_weights()
        weights[k] = np.concatenate([kernel.reshape(-1), bias])
        val_losses[k] = history["val_loss"]
        el = time.time() - t0
        log(f"fold {k + 1}/{len(folds)} ({name}): log loss {metrics.log_loss(y[va], p_oof[va]):.5f} on {int(va.sum())} "
            f"photos; {el:.0f}s, ETA {el / (done_k + 1) * (len(mine) - done_k - 1):.0f}s")
    return p_oof, weights, val_losses


def _gather(strategy, chief: bool, out, folds, mine, fold_idx, p_oof, weights, val_losses):
    """Every worker's folds on every worker; the chief logs the others' validation curves."""
    rows = np.flatnonzero(np.isin(fold_idx, mine))
    p_oof = distribution.gather_rows(strategy, p_oof[rows], rows, len(p_oof)).astype(np.float64)
    weights = distribution.gather_rows(strategy, weights[mine], np.asarray(mine, np.int64), len(folds))
    val_losses = distribution.gather_rows(strategy, val_losses[mine], np.asarray(mine, np.int64), len(folds))
    for k in sorted(set(range(len(folds))) - set(mine)) if chief else ():
        tb = ScalarLog(files.join(out, "tensorboard", folds[k]))
        for e, v in enumerate(val_losses[k]):
            tb.epoch(e, {"val_loss": v})
        tb.close()
    return p_oof, weights, val_losses


def _report(cfg: KFoldConfig, folds: list[str], d: _Data, p_oof, val_losses) -> dict:
    y, fold_idx, excluded = d.y, d.fold_idx, d.excluded
    per_fold = []
    for k, name in enumerate(folds):
        va = fold_idx == k
        per_fold.append({"fold": name, "count": int(va.sum()), "trained_on": int(((fold_idx != k) & ~excluded).sum()),
                         "log_loss": metrics.log_loss(y[va], p_oof[va]),
                         "val_loss_by_epoch": [round(float(v), 5) for v in val_losses[k]]})
    return {"config": dataclasses.asdict(cfg), "folds": folds, "records": manifest.content_fingerprint(cfg.records),
            "inputs": _input_digests(cfg),
            "count": int(len(y)),
            "excluded": int(excluded.sum()), "oof_log_loss": metrics.log_loss(y, p_oof),
            "oof_accuracy": metrics.accuracy(y, p_oof), "oof_log_loss_ci95": metrics.bootstrap_ci(y, p_oof),
            "cleaned_oof_log_loss": metrics.log_loss(y[~excluded], p_oof[~excluded]), "per_fold": per_fold}


def _write_model(cfg: KFoldConfig, out: str, models, folds: list[str], weights, dim: int, report: dict,
                 tuned: fold_tops.FoldTops | None = None) -> None:
    """The fold heads, the exported model (frozen backbone(s) -> pooled features -> the k heads
    averaged into one; with stage 2: the bottom -> every fold's top and head) and the report."""
    heads = []
    for k in range(len(folds)):
        head = build_head(dim, cfg.dropout)
        head.set_weights([weights[k, :dim].reshape(dim, 1), weights[k, dim:]])
        heads.append(head)
    # Every fold head's weights, for inspection and tests (a few KB).
    files.save_npz(files.join(out, "fold_heads.npz"), **{f"{folds[k]}/{j}": v for k, h in enumerate(heads)
                                                         for j, v in enumerate(h.get_weights())})
    model = pooled_head_model(models, average_heads(heads), f"catdog_kfold_{cfg.slug()}", mirror=cfg.tta_flip) \
        if tuned is None else fold_tops.member_model(tuned, cfg.dropout, f"catdog_kfold_{cfg.slug()}_ft"
                                                     f"{cfg.finetune_blocks}", cfg.tta_flip)
    model.save(files.join(out, "model.keras"))
    files.write_text(files.join(out, oof.REPORT), json.dumps(report, indent=1))
    files.write_run_readme(out, model.name, int(model.input_shape[1]), False)
    log(f"wrote {files.join(out, 'model.keras')} (mean of {len(heads)} fold heads), "
        f"{files.join(out, oof.FILE)}; TensorBoard: {files.join(out, 'tensorboard')}")


def _finished(cfg: KFoldConfig, out: str, folds: list[str]) -> dict | None:
    """The report of a finished run in `out` with the same result settings, records and folds."""
    done = files.join(out, oof.REPORT)
    if not (files.exists(done) and files.exists(files.join(out, "model.keras"))):
        return None
    report = files.read_json(done, "k-fold report")
    same = isinstance(report, dict) and isinstance(report.get("config"), dict) and \
        _result_settings(report["config"]) == _result_settings(dataclasses.asdict(cfg)) and \
        report.get("folds") == folds and report.get("records") == manifest.content_fingerprint(cfg.records) and \
        report.get("inputs", _input_digests(cfg)) == _input_digests(cfg)
    if not same:
        log(f"{out} holds a run with other settings or inputs: redone")
    return report if same else None


def _run_key(cfg: KFoldConfig, folds: list[str]) -> dict:
    """What a fold's stage 2 depends on: a saved fold with another key is redone."""
    return {"settings": _result_settings(dataclasses.asdict(cfg)), "folds": folds,
            "records": manifest.content_fingerprint(cfg.records), "inputs": _input_digests(cfg)}


def _input_digests(cfg: KFoldConfig) -> dict:
    """Checksums of the input files a run reads by name (a teacher's predictions, a weights file)."""
    return {"soft_targets": identity.file_digest(cfg.soft_targets), "weights": identity.file_digest(cfg.weights)}

