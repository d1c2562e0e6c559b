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
from scipy.optimize import minimize, minimize_scalar

from catdog_tf.errors import UserError
from catdog_tf.metrics import LOGIT_EPS as EPS
from catdog_tf.metrics import accuracy, log_loss
from catdog_tf.models.layers import CombineProbabilities
from catdog_tf.inference import predict
from catdog_tf.training import kfold


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
    p = np.clip(p, EPS, 1 - EPS)
    z = np.log(p) - np.log(1 - p)
    res = minimize_scalar(lambda t: log_loss(y, 1 / (1 + np.exp(-z / t))), bounds=(0.2, 5.0), method="bounded")
    return float(res.x) if res.fun < log_loss(y, p) else 1.0


def build_ensemble(members: list[keras.Model], weights, space: str = "logit", temperature: float = 1.0,
                   name: str = "catdog_ensemble") -> keras.Model:
    """One graph: image batch at the largest member size -> per-member resize -> combine."""
    size = max(predict.input_size(m) for m in members)
    inputs = keras.Input((size, size, 3), name="image")
    outs = []
    for k, m in enumerate(members):
        s = predict.input_size(m)
        # Re-wrap each member under a unique name: two folds of one backbone share names.
        member = keras.Model(m.inputs, m.outputs, name=f"member{k}_{m.name}")
        x = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        outs.append(member(x))
    out = CombineProbabilities(weights, space, temperature, name="combine", dtype="float32")(outs)
    return keras.Model(inputs, out, name=name)


def _fit_combination(P: np.ndarray, y: np.ndarray, space: str, temperature: bool, weights=None):
    """(space, weights, temperature, {space: (weights, log loss)}) minimizing log loss on
    (P, y); space 'auto' tries both; fixed `weights` are only normalized."""
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
    members = [predict.load_model(p) for p in member_paths]
    cols, y, ids0 = [], None, None
    for path, m in zip(member_paths, members):
        ids, labels, p = predict.predict_records(m, records_dir, split, batch_size, tta, fold)
        if ids0 is not None and ids != ids0:
            raise UserError(f"{path}: validation order differs between members")
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
                  accuracy=accuracy(y, final))
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
    cols, y, ids0, folds = [], None, None, None
    for d in member_dirs:
        ids, labels, fl, p = kfold.read_oof(d)
        order = np.argsort(ids)
        ids, labels, fl, p = [ids[i] for i in order], labels[order], [fl[i] for i in order], p[order]
        if ids0 is not None and ids != ids0:
            raise UserError(f"{d}: its out-of-fold predictions cover other photos than {member_dirs[0]}")
        if folds is not None and fl != folds:
            raise UserError(f"{d}: the photos are in other folds than in {member_dirs[0]}")
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
              "oof_log_loss": log_loss(y, cross), "oof_accuracy": accuracy(y, cross),
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
