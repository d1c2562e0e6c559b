"""Several trained models -> ONE Keras model that outputs the combined P(dog).

    python -m catdog_tf.ensemble --member=runs/lite0 --member=runs/lite2 --records=records --out=runs/final

The ensemble takes a raw image batch at its input size (the largest member's), resizes
it per member inside the graph (antialiased bilinear, as the pipeline does), runs each
member with its own preprocessing, and combines the members' P(dog) with weights in
probability or logit space, then divides the logit by a fitted temperature.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np

EPS = 1e-7


@keras.saving.register_keras_serializable(package="catdog_tf")
class CombineProbabilities(keras.layers.Layer):
    """Weighted average of member probabilities, in 'prob' or 'logit' space, then a temperature."""

    def __init__(self, member_weights, space: str = "logit", temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if space not in ("prob", "logit"):
            raise ValueError(f"space must be 'prob' or 'logit', not {space!r}")
        self.member_weights = [float(w) for w in member_weights]
        self.space = space
        self.temperature = float(temperature)

    def call(self, inputs):
        from keras import ops

        p = ops.concatenate([ops.cast(ops.reshape(x, (-1, 1)), "float32") for x in inputs], axis=-1)
        w = ops.convert_to_tensor(np.asarray(self.member_weights, np.float32) / sum(self.member_weights))
        if self.space == "prob":
            q = ops.clip(ops.sum(p * w, axis=-1, keepdims=True), EPS, 1 - EPS)
            z = ops.log(q) - ops.log(1 - q)
        else:
            p = ops.clip(p, EPS, 1 - EPS)
            z = ops.sum((ops.log(p) - ops.log(1 - p)) * w, axis=-1, keepdims=True)
        return ops.sigmoid(z / self.temperature)

    def get_config(self):
        return {**super().get_config(), "member_weights": self.member_weights, "space": self.space,
                "temperature": self.temperature}


def combine(P: np.ndarray, weights, space: str, temperature: float = 1.0) -> np.ndarray:
    """NumPy twin of CombineProbabilities: P is [n, members]."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    P = np.clip(np.asarray(P, np.float64), EPS, 1 - EPS)
    if space == "prob":
        q = np.clip(P @ w, EPS, 1 - EPS)
        z = np.log(q) - np.log(1 - q)
    else:
        z = (np.log(P) - np.log(1 - P)) @ w
    return 1 / (1 + np.exp(-z / temperature))


def fit_weights(P: np.ndarray, y: np.ndarray, space: str) -> np.ndarray:
    """Non-negative weights summing to 1 that minimize validation log loss. Starts from (and
    never returns worse than) the best single member and the uniform average."""
    from scipy.optimize import minimize

    from catdog_tf.evaluate import log_loss

    m = P.shape[1]
    candidates = [np.eye(m)[i] for i in range(m)] + [np.full(m, 1 / m)]
    best = min(candidates, key=lambda w: log_loss(y, combine(P, w, space)))
    if m == 1:
        return best

    def loss(a):
        w = np.exp(a - a.max())
        return log_loss(y, combine(P, w / w.sum(), space))

    res = minimize(loss, np.log(np.maximum(best, 1e-3)), method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 2000})
    w = np.exp(res.x - res.x.max())
    w /= w.sum()
    return w if loss(res.x) < log_loss(y, combine(P, best, space)) else best


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    from catdog_tf.evaluate import log_loss

    p = np.clip(p, EPS, 1 - EPS)
    z = np.log(p) - np.log(1 - p)
    res = minimize_scalar(lambda t: log_loss(y, 1 / (1 + np.exp(-z / t))), bounds=(0.2, 5.0), method="bounded")
    return float(res.x) if res.fun < log_loss(y, p) else 1.0


def build_ensemble(members: list[keras.Model], weights, space: str = "logit", temperature: float = 1.0,
                   name: str = "catdog_ensemble") -> keras.Model:
    """One graph: image batch at the largest member size -> per-member resize -> combine."""
    from catdog_tf.predict import input_size

    size = max(input_size(m) for m in members)
    inputs = keras.Input((size, size, 3), name="image")
    outs = []
    for k, m in enumerate(members):
        s = input_size(m)
        # Re-wrap each member under a unique name: two folds of one backbone share names.
        member = keras.Model(m.inputs, m.outputs, name=f"member{k}_{m.name}")
        x = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        outs.append(member(x))
    out = CombineProbabilities(weights, space, temperature, name="combine", dtype="float32")(outs)
    return keras.Model(inputs, out, name=name)


def pooled_head_model(pooled_models: list[keras.Model], head: keras.Model, name: str) -> keras.Model:
    """One graph: image batch at the largest backbone's size -> per-backbone resize
    (antialiased bilinear, as the pipeline) -> pooled features, concatenated when several
    -> head. The export of feature fusion and of k-fold heads."""
    size = max(int(m.input_shape[1]) for m in pooled_models)
    inputs = keras.Input((size, size, 3), name="image")
    feats = []
    for k, m in enumerate(pooled_models):
        s = int(m.input_shape[1])
        z = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        feats.append(m(z, training=False))
    z = feats[0] if len(feats) == 1 else keras.layers.Concatenate(name="fused")(feats)
    return keras.Model(inputs, head(z), name=name)


def _fit_combination(P: np.ndarray, y: np.ndarray, space: str, temperature: bool, weights=None):
    """(space, weights, temperature, {space: (weights, log loss)}) minimizing log loss on
    (P, y); space 'auto' tries both; fixed `weights` are only normalized."""
    from catdog_tf.evaluate import log_loss

    fitted = {}
    for sp in (("prob", "logit") if space == "auto" else (space,)):
        w = np.asarray(weights, np.float64) / np.sum(weights) if weights else fit_weights(P, y, sp)
        fitted[sp] = (w, log_loss(y, combine(P, w, sp)))
    sp = min(fitted, key=lambda s: fitted[s][1])
    w = fitted[sp][0]
    return sp, w, (fit_temperature(combine(P, w, sp), y) if temperature else 1.0), fitted


def run(member_paths: list[str], records_dir: str, out: str, *, split: str = "validation", fold: int | None = None,
        weights: list[float] | None = None, space: str = "auto", temperature: bool = True, tta: str = "none",
        batch_size: int = 32) -> dict:
    """Predicts the validation split with each member, fits the combination, exports the
    ensemble to out/model.keras (+ out/saved_model) and returns the report."""
    from catdog_tf import predict
    from catdog_tf.evaluate import log_loss

    members = [predict.load_model(p) for p in member_paths]
    cols, y, ids0 = [], None, None
    for path, m in zip(member_paths, members):
        ids, labels, p = predict.predict_records(m, records_dir, split, batch_size, tta, fold)
        if ids0 is not None and ids != ids0:
            raise ValueError(f"{path}: validation order differs between members")
        ids0, y = ids, labels
        cols.append(p)
        print(f"member {path}: {split} log loss {log_loss(y, p):.5f}", file=sys.stderr)
    P = np.stack(cols, axis=1)
    report = {"members": [{"path": p, "log_loss": log_loss(y, P[:, k])} for k, p in enumerate(member_paths)],
              "count": int(len(y)), "split": split}
    space, w, t, fitted = _fit_combination(P, y, space, temperature, weights)
    for sp, (wsp, loss) in fitted.items():
        report[f"{sp}_average"] = {"weights": [float(v) for v in wsp], "log_loss": loss}
    final = combine(P, w, space, t)
    report.update(space=space, weights=[float(v) for v in w], temperature=t, log_loss=log_loss(y, final),
                  accuracy=float(np.mean((final > 0.5) == (y > 0.5))))
    model = build_ensemble(members, w, space, t)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    model.save(str(outp / "model.keras"))
    try:
        model.export(str(outp / "saved_model"), verbose=False)
    except Exception as e:  # noqa: BLE001 - the .keras file is the product; serving export is extra
        print(f"SavedModel export failed: {type(e).__name__}: {e}", file=sys.stderr)
    (outp / "ensemble.json").write_text(json.dumps(report, indent=1))
    print(f"ensemble ({space} space, weights {np.round(w, 3).tolist()}, T={t:.3f}): {split} log loss "
          f"{report['log_loss']:.5f} (tuned on this split) -> {outp / 'model.keras'}", file=sys.stderr)
    return report




def run_oof(member_dirs: list[str], out: str, *, space: str = "auto", temperature: bool = True) -> dict:
    """The combination fitted on k-fold members' out-of-fold predictions (catdog_tf.kfold).

    The reported figure is cross-fitted: each fold's photos are combined with weights and
    temperature fitted on the other folds only, so no photo steers its own prediction. The
    exported model uses the combination fitted on every fold."""
    from catdog_tf import kfold, predict
    from catdog_tf.evaluate import log_loss

    cols, y, ids0, folds = [], None, None, None
    for d in member_dirs:
        ids, labels, fl, p = kfold.read_oof(d)
        order = np.argsort(ids)
        ids, labels, fl, p = [ids[i] for i in order], labels[order], [fl[i] for i in order], p[order]
        if ids0 is not None and ids != ids0:
            raise ValueError(f"{d}: its out-of-fold predictions cover other photos than {member_dirs[0]}")
        if folds is not None and fl != folds:
            raise ValueError(f"{d}: the photos are in other folds than in {member_dirs[0]}")
        ids0, y, folds = ids, labels, fl
        cols.append(p)
        print(f"member {d}: out-of-fold log loss {log_loss(y, p):.5f}", file=sys.stderr)
    P, folds = np.stack(cols, axis=1), np.asarray(folds)
    cross = np.zeros(len(y))
    for f in sorted(set(folds)):
        te = folds == f
        sp, w, t, _ = _fit_combination(P[~te], y[~te], space, temperature)
        cross[te] = combine(P[te], w, sp, t)
    sp, w, t, _ = _fit_combination(P, y, space, temperature)
    fitted = combine(P, w, sp, t)
    report = {"members": [{"path": d, "oof_log_loss": log_loss(y, P[:, k])} for k, d in enumerate(member_dirs)],
              "count": int(len(y)), "folds": sorted(set(folds.tolist())), "space": sp,
              "weights": [float(v) for v in w], "temperature": t,
              "oof_log_loss": log_loss(y, cross), "oof_accuracy": float(np.mean((cross > 0.5) == (y > 0.5))),
              "fitted_log_loss": log_loss(y, fitted)}
    members = [predict.load_model(d) for d in member_dirs]
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    build_ensemble(members, w, sp, t).save(str(outp / "model.keras"))
    (outp / "ensemble.json").write_text(json.dumps(report, indent=1))
    kfold.write_oof(outp / "oof_predictions.csv", ids0, y, folds, cross)
    print(f"ensemble ({sp} space, weights {np.round(w, 3).tolist()}, T={t:.3f}): out-of-fold log loss "
          f"{report['oof_log_loss']:.5f} cross-fitted ({report['fitted_log_loss']:.5f} fitted on all) "
          f"-> {outp / 'model.keras'}", file=sys.stderr)
    return report


def fuse(backbone_names: list[str], records_dir: str, out: str, *, train_split: str = "train",
         val_split: str = "validation", cache_dir: str | None = "runs/cache", flip: bool = True, epochs: int = 60,
         lr: float = 1e-3, dropout: float = 0.3, batch_size: int = 64, patience: int = 6, seed: int = 0) -> dict:
    """Feature fusion: the members' pooled ImageNet features concatenated, one logistic head
    (with dropout) trained on them. Cached features make this a minutes job on a CPU. The
    export is one graph: image -> per-backbone resize + backbone + pooling -> concat -> head."""
    from catdog_tf import features, kfold
    from catdog_tf.evaluate import log_loss
    from catdog_tf.model import build_head

    keras.utils.set_random_seed(seed)
    pooled_models, xs, vs, y, yv = [], [], [], None, None
    for name in backbone_names:
        pm = kfold.pooled_model(name, "auto", None)  # named as train.py's: feature caches are shared
        size = int(pm.input_shape[1])
        x, y, _ = features.cached(pm, records_dir, train_split, size, cache_dir=cache_dir)
        if flip:
            xf, yf, _ = features.cached(pm, records_dir, train_split, size, flip=True, cache_dir=cache_dir)
            x, y = np.concatenate([x, xf]), np.concatenate([y, yf])
        v, yv, _ = features.cached(pm, records_dir, val_split, size, cache_dir=cache_dir)
        pooled_models.append(pm)
        xs.append(x)
        vs.append(v)
    x, v = np.concatenate(xs, axis=1), np.concatenate(vs, axis=1)
    head = build_head(x.shape[1], dropout, seed)
    head.compile(keras.optimizers.Adam(lr), "binary_crossentropy", metrics=["accuracy"])
    hist = head.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(v, yv), shuffle=True, verbose=2,
                    callbacks=[keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True),
                               keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=2, min_lr=1e-6)])
    pv = head.predict(v, batch_size=256, verbose=0).reshape(-1)
    model = pooled_head_model(pooled_models, head, "catdog_fusion")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    model.save(str(outp / "model.keras"))
    report = {"backbones": backbone_names, "feature_dim": int(x.shape[1]), "train_split": train_split,
              "val_split": val_split, "val_log_loss": log_loss(yv, pv),
              "val_accuracy": float(np.mean((pv > 0.5) == (yv > 0.5))), "epochs": len(hist.epoch)}
    (outp / "fusion.json").write_text(json.dumps(report, indent=1))
    print(f"fusion of {backbone_names}: {val_split} log loss {report['val_log_loss']:.5f} -> {outp / 'model.keras'}",
          file=sys.stderr)
    return report


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if F.fuse:
        report = fuse(F.fuse.split(","), F.records, F.out, train_split=F.train_split, val_split=F.split,
                      cache_dir=F.cache_dir, flip=F.flip)
        print(json.dumps(report))
        return
    if not F.member:
        raise SystemExit("error: give --member=MODEL at least once (or --fuse=BACKBONE,BACKBONE)")
    if F.oof:
        try:
            report = run_oof(F.member, F.out, space=F.space, temperature=F.temperature)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
        print(json.dumps({k: report[k] for k in ("space", "weights", "temperature", "oof_log_loss", "oof_accuracy")}))
        return
    weights = [float(v) for v in F.weights.split(",")] if F.weights else None
    if weights and len(weights) != len(F.member):
        raise SystemExit(f"error: {len(weights)} weights for {len(F.member)} members")
    report = run(F.member, F.records, F.out, split=F.split, fold=F.fold, weights=weights, space=F.space,
                 temperature=F.temperature, tta=F.tta, batch_size=F.batch_size)
    print(json.dumps({k: report[k] for k in ("space", "weights", "temperature", "log_loss", "accuracy")}))


def _define_flags():
    from absl import flags

    flags.DEFINE_multi_string("member", None, "Trained model (dir or .keras); repeatable.")
    flags.DEFINE_string("records", "records", "Records folder whose split fits the combination.")
    flags.DEFINE_string("split", "validation", "Split used to fit weights/temperature.")
    flags.DEFINE_integer("fold", None, "Fold (records built with --folds).")
    flags.DEFINE_string("weights", None, "Fixed weights, e.g. 0.2,0.3,0.5 (default: fitted).")
    flags.DEFINE_enum("space", "auto", ["auto", "prob", "logit"], "Averaging space (auto: the better one).")
    flags.DEFINE_bool("temperature", True, "Fit a temperature on the split.")
    flags.DEFINE_enum("tta", "none", ["none", "flip"], "Test-time augmentation while fitting.")
    flags.DEFINE_string("out", "runs/ensemble", "Output folder (model.keras, saved_model/, ensemble.json).")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    flags.DEFINE_string("fuse", None, "Feature fusion instead: comma-separated backbone names whose pooled "
                        "features are concatenated under one trained logistic head.")
    flags.DEFINE_string("train_split", "train", "With --fuse: split(s) the fused head trains on.")
    flags.DEFINE_string("cache_dir", "runs/cache", "With --fuse: feature cache (shared with train.py).")
    flags.DEFINE_bool("flip", True, "With --fuse: also train on horizontally flipped features.")
    flags.DEFINE_bool("oof", False, "Members are k-fold runs (catdog_tf.kfold): fit on their out-of-fold "
                      "predictions instead of predicting --split.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
