"""Several trained models -> ONE Keras model that outputs the combined P(dog).

    python -m catdog_tf.ensemble --member=runs/lite0 --member=runs/lite2 --records=records --out=runs/final

The ensemble takes a raw image batch at its input size (the largest member's), resizes
it per member inside the graph (antialiased bilinear), runs each
member with its own preprocessing, and combines the members' P(dog) with weights in
probability or logit space, then divides the logit by a fitted temperature.

Outputs go through catdog_tf.files (local, gs://, hdfs://). Under a multi-worker TF_CONFIG
only the chief writes them: any other worker says so and returns an empty report.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
from scipy.optimize import minimize, minimize_scalar

from catdog_tf import contracts, distribution, files
from catdog_tf.data import manifest
from catdog_tf.errors import UserError
from catdog_tf.metrics import accuracy, bootstrap_ci, log_loss, logit, sigmoid
from catdog_tf.models import combination, imagenet
from catdog_tf.models.head import imagenet_classifier, split_pooled_head
from catdog_tf.models.layers import CombineProbabilities
from catdog_tf.inference import predictor
from catdog_tf.data import oof


def combine(P: np.ndarray, weights, space: str, temperature: float = 1.0, hedge=None,
            masses: np.ndarray | None = None, floor: float = 0.0) -> np.ndarray:
    """The combination rule (models.combination) in float64: P is [n, members], masses [n, 2]
    (ImageNet cat, dog) with a hedge."""
    rule = combination.Rule(tuple(weights), space, temperature, None if hedge is None else tuple(hedge), floor)
    return combination.combine(combination.NUMPY, P, rule, masses)


def fit_hedge(P: np.ndarray, y: np.ndarray, w, space: str, masses: np.ndarray) -> list[float]:
    """The hedge (b0, b_animal, b_both; see CombineProbabilities) minimizing log loss, starting
    from no hedge at the fitted temperature."""
    t = fit_temperature(combine(P, w, space), y)

    def loss(h):
        return log_loss(y, combine(P, w, space, 1.0, h, masses))

    res = minimize(loss, [-np.log(t), 0.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 4000})
    return [float(v) for v in res.x]


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
    p = combination.NUMPY.clip(p)
    z = logit(p)
    res = minimize_scalar(lambda t: log_loss(y, sigmoid(z / t)), bounds=(0.2, 5.0), method="bounded")
    return float(res.x) if res.fun < log_loss(y, p) else 1.0


def fit_floor(p: np.ndarray, y: np.ndarray) -> float:
    """The label-noise floor eps (P -> eps + (1 - 2 eps) P) minimizing log loss, searched on a log
    scale from 1e-7 to 0.05; 0 when no floor helps."""
    def loss(log_eps):
        e = 10.0 ** log_eps
        return log_loss(y, e + (1 - 2 * e) * p)

    res = minimize_scalar(loss, bounds=(-7.0, np.log10(0.05)), method="bounded")
    return float(np.float32(10.0 ** res.x)) if res.fun < log_loss(y, p) else 0.0  # as the graph holds it


def build_ensemble(members: list[keras.Model], weights, space: str = "logit", temperature: float = 1.0,
                   name: str = "catdog_ensemble", hedge=None, classifiers=None, floor: float = 0.0) -> keras.Model:
    """One graph: image batch at the largest member size -> per-member resize -> combine.
    With `hedge`, `classifiers` holds each member's ImageNet classifier (head.imagenet_classifier):
    it runs on the member's own pooled features, and the members' mean cat and dog mass feeds
    the hedge."""
    size = max(predictor.input_size(m) for m in members)
    inputs = keras.Input((size, size, 3), name="image")
    outs, masses = [], []
    for k, m in enumerate(members):
        s = predictor.input_size(m)
        x = inputs if s == size else keras.layers.Resizing(s, s, antialias=True, name=f"resize{k}_{s}")(inputs)
        if hedge is None:
            # Re-wrap each member under a unique name: two folds of one backbone share names.
            outs.append(keras.Model(m.inputs, m.outputs, name=f"member{k}_{m.name}")(x))
            continue
        parts = split_pooled_head(m)
        if parts is None:
            raise UserError(f"member {m.name}: the hedge needs a k-fold member (one backbone -> pooled features -> head)")
        pooled, head = parts
        feats = keras.Model(pooled.input, pooled.output, name=f"member{k}_{pooled.name}")(x)
        outs.append(keras.Model(head.input, head.output, name=f"member{k}_head")(feats))
        masses.append(_cat_dog_mass(classifiers[k](feats), f"member{k}_imagenet_cat_dog"))
    if hedge is not None:
        outs.append(masses[0] if len(masses) == 1 else keras.layers.Average(name="imagenet_cat_dog")(masses))
    out = CombineProbabilities(weights, space, temperature, hedge=hedge, floor=floor, name="combine",
                               dtype="float32")(outs)
    return keras.Model(inputs, out, name=name)


def _cat_dog_mass(probs, name: str):
    """ImageNet probabilities [N, 1000] -> [N, 2] summed cat and dog classes (a fixed Dense)."""
    select = np.zeros((int(probs.shape[-1]), 2), np.float32)
    select[imagenet.CAT_CLASSES.start:imagenet.CAT_CLASSES.stop, 0] = 1
    select[imagenet.DOG_CLASSES.start:imagenet.DOG_CLASSES.stop, 1] = 1
    return combination.fixed_dense(probs, select, name, dtype=None, trainable=False)


def _fit_combination(P: np.ndarray, y: np.ndarray, space: str, temperature: bool, weights=None):
    """(space, weights, temperature, {space: (weights, log loss)}) minimizing log loss on
    (P, y); space 'auto' tries both; fixed `weights` are only normalized."""
    fitted = {}
    for sp in (("prob", "logit") if space == "auto" else (space,)):
        w = np.asarray(weights, np.float64) / np.sum(weights) if weights else fit_weights(P, y, sp)
        fitted[sp] = (w, log_loss(y, combine(P, w, sp)))
    # A tie (one member: both spaces are the same rule) goes to logit, which serving can rewrite.
    sp = min(fitted, key=lambda s: (fitted[s][1], s != "logit"))
    w = contracts.finite(fitted[sp][0], "the ensemble's weights")
    t = fit_temperature(combine(P, w, sp), y) if temperature else 1.0
    return sp, w, float(contracts.finite(t, "the ensemble's temperature")), fitted


def run(member_paths: list[str], records_dir: str, out: str, *, split: str = "validation", fold: int | None = None,
        weights: list[float] | None = None, space: str = "auto", temperature: bool = True,
        batch_size: int = 32) -> dict:
    """Predicts the validation split with each member, fits the combination, exports the
    ensemble to out/model.keras (+ out/saved_model) and returns the report ({} on a worker
    that is not the chief: nothing is computed or written there)."""
    if distribution.not_chief("ensemble", out):
        return {}
    files.check_out(out, "ensemble", {"member": member_paths, "records": records_dir})
    # The chief predicts alone, over this host's devices (the other workers have left).
    manifest.require_labeled(records_dir, split, fold, "fitting the ensemble")
    strategy = distribution.local_strategy()
    members = [predictor.load_model(p, strategy) for p in member_paths]
    cols, y, ids0 = [], None, None
    for path, m in zip(member_paths, members):
        ids, labels, p = predictor.predict_records(m, records_dir, split, batch_size, "none", fold, strategy)
        if ids0 is not None and ids != ids0:
            raise UserError(f"{path}: validation order differs between members")
        ids0, y = ids, contracts.labels(labels, f"{records_dir}:{split}", ids)
        cols.append(contracts.probabilities(p, f"member {path}", ids))
        print(f"member {path}: {split} log loss {log_loss(y, p):.5f}", file=sys.stderr)
    P = np.stack(cols, axis=1)
    report = {"members": [{"path": p, "log_loss": log_loss(y, P[:, k])} for k, p in enumerate(member_paths)],
              "count": int(len(y)), "split": split}
    space, w, t, fitted = _fit_combination(P, y, space, temperature, weights)
    for sp, (wsp, loss) in fitted.items():
        report[f"{sp}_average"] = {"weights": [float(v) for v in wsp], "log_loss": loss}
    final = combine(P, w, space, t)
    report.update(space=space, weights=[float(v) for v in w], temperature=t, log_loss=log_loss(y, final),
                  log_loss_ci95=bootstrap_ci(y, final), accuracy=accuracy(y, final))
    model = build_ensemble(members, w, space, t)
    _clear(out)
    model.save(files.join(out, "model.keras"))
    try:
        model.export(files.join(out, "saved_model"), verbose=False)
    except Exception as e:  # noqa: BLE001 - the .keras file is the product; serving export is extra
        print(f"SavedModel export failed: {type(e).__name__}: {e}", file=sys.stderr)
    files.write_text(files.join(out, "ensemble.json"), json.dumps(report, indent=1))
    files.write_run_readme(out, model.name, predictor.input_size(model), files.exists(files.join(out, "saved_model")))
    print(f"ensemble ({space} space, weights {np.round(w, 3).tolist()}, T={t:.3f}): {split} log loss "
          f"{report['log_loss']:.5f} (tuned on this split) -> {files.join(out, 'model.keras')}", file=sys.stderr)
    return report


def _read_members(member_dirs: list[str]):
    """The members' out-of-fold predictions side by side, rows sorted by id: (ids, labels,
    folds, P [n, members], excluded, mean ImageNet masses [n, 2] or None)."""
    first, cols, masses = None, [], []
    for d in member_dirs:
        o = oof.read_oof(d)
        order = np.argsort(o.ids)
        ids, folds = [o.ids[i] for i in order], [o.folds[i] for i in order]
        if first is not None and ids != first.ids:
            raise UserError(f"{d}: its out-of-fold predictions cover other photos than {member_dirs[0]}")
        if first is not None and folds != first.folds:
            raise UserError(f"{d}: the photos are in other folds than in {member_dirs[0]}")
        if first is None:
            first = oof.OOF(ids, o.labels[order], folds, None, o.excluded[order], None)
        cols.append(o.p_dog[order])
        masses.append(None if o.masses is None else o.masses[order])
        print(f"member {d}: out-of-fold log loss {log_loss(first.labels, cols[-1]):.5f}", file=sys.stderr)
    mass = None if any(m is None for m in masses) else np.mean(masses, axis=0)
    return first.ids, first.labels, np.asarray(first.folds), np.stack(cols, axis=1), first.excluded, mass


def _clear(out: str) -> None:
    """An earlier ensemble's files go first: an --oof run's predictions CSV or a SavedModel must
    not sit beside a new model as if they were its own."""
    files.makedirs(out)
    for name in ("model.keras", "saved_model", "ensemble.json", "oof_predictions.csv", "README.md"):
        path = files.join(out, name)
        files.rmtree(path) if files.isdir(path) else files.remove(path)


def _figures(y, p, excluded, prefix: str = "oof_") -> dict:
    """Log loss over every photo (with its 95 % interval) and over the photos not excluded."""
    return {f"{prefix}log_loss": log_loss(y, p), f"{prefix}log_loss_ci95": bootstrap_ci(y, p),
            f"{prefix}accuracy": accuracy(y, p), f"cleaned_{prefix}log_loss": log_loss(y[~excluded], p[~excluded]),
            f"cleaned_{prefix}log_loss_ci95": bootstrap_ci(y[~excluded], p[~excluded]),
            "cleaned_count": int((~excluded).sum())}


def run_oof(member_dirs: list[str], out: str, *, space: str = "auto", temperature: bool = True,
            hedge: str = "auto", floor: str = "auto", weights: list[float] | None = None) -> dict:
    """The combination fitted on k-fold members' out-of-fold predictions (catdog_tf.kfold), over
    EVERY photo of their folds (those excluded from training too, as a test set holds them).

    The reported figure is cross-fitted: each fold's photos are combined with weights,
    temperature and hedge fitted on the other folds only, so no photo steers its own prediction.
    hedge: 'auto' keeps the ImageNet-mass hedge when it lowers the cross-fitted log loss, 'on',
    'off'; floor (the label-noise floor, fitted last) likewise. Fixed `weights` (one per member)
    are only normalized. The exported model uses the combination fitted on every fold. Returns
    {} on a worker that is not the chief."""
    if distribution.not_chief("ensemble", out):
        return {}
    for name, v in (("hedge", hedge), ("floor", floor)):
        if v not in ("auto", "on", "off"):
            raise UserError(f"--{name} must be auto, on or off, not {v!r}")
    files.check_out(out, "ensemble", {"member": member_dirs})
    if weights is not None and len(weights) != len(member_dirs):
        raise UserError(f"--weights: {len(weights)} weights for {len(member_dirs)} members")
    ids, y, folds, P, excluded, masses = _read_checked_members(member_dirs, hedge)
    fit = _OofFit(P, y, masses, space, temperature, weights)
    hedges = _tries(hedge, masses is not None)
    cross = {k: fit.cross_fitted(folds, with_hedge) for k, with_hedge in hedges.items()}
    use = min(cross, key=lambda k: log_loss(y, cross[k][0]))
    floors = _tries(floor, True)
    use_floor = min(floors, key=lambda k: log_loss(y, cross[use][floors[k]]))
    cross_use = cross[use][floors[use_floor]]
    everything = np.ones(len(y), bool)
    sp, w, h, t, eps = fit.fit(everything, hedges[use])
    eps = eps if floors[use_floor] else 0.0
    fitted = fit.apply(everything, sp, w, h, t, eps)
    if h is not None:
        contracts.finite(h, "the ensemble's hedge")
    report = {"members": [{"path": d, **_figures(y, P[:, k], excluded)} for k, d in enumerate(member_dirs)],
              "count": int(len(y)), "excluded": int(excluded.sum()), "folds": sorted(set(folds.tolist())),
              "space": sp, "weights": [float(v) for v in w], "temperature": 1.0 if h is not None else t,
              "hedge": h, "floor": eps, **_figures(y, cross_use, excluded),
              "hedge_tried": {k: log_loss(y, v[0]) for k, v in cross.items()},
              "floor_tried": {k: log_loss(y, cross[use][on]) for k, on in floors.items()},
              "fitted_log_loss": log_loss(y, fitted)}
    _write_oof_ensemble(member_dirs, out, report, ids, y, folds, cross_use, excluded, masses)
    lo, hi = report["oof_log_loss_ci95"]
    print(f"ensemble ({sp} space, weights {np.round(w, 3).tolist()}, "
          f"{'hedge ' + str(np.round(h, 3).tolist()) if h is not None else f'T={t:.3f}'}, floor {eps:.2g}): "
          f"out-of-fold log loss "
          f"{report['oof_log_loss']:.5f} (95% CI {lo:.5f}-{hi:.5f}) on all {len(y)} photos, cross-fitted "
          f"({report['fitted_log_loss']:.5f} fitted on all); {report['cleaned_oof_log_loss']:.5f} on the "
          f"{report['cleaned_count']} not excluded; hedge tried: "
          f"{ {k: round(v, 5) for k, v in report['hedge_tried'].items()} }, floor tried: "
          f"{ {k: round(v, 5) for k, v in report['floor_tried'].items()} } -> {files.join(out, 'model.keras')}",
          file=sys.stderr)
    return report


def _tries(setting: str, possible: bool) -> dict:
    """{name: on?} of an auto/on/off setting: the variants cross-fitting compares."""
    if not possible or setting == "off":
        return {"off": False}
    return {"on": True} if setting == "on" else {"off": False, "on": True}


def _read_checked_members(member_dirs: list[str], hedge: str):
    """_read_members, refused when the combination could not be cross-fitted or hedged."""
    ids, y, folds, P, excluded, masses = _read_members(member_dirs)
    y = contracts.labels(y, f"{member_dirs[0]}: out-of-fold predictions", ids)
    for f in sorted(set(folds)):
        if len(set(y[folds != f])) < 2:  # cross-fitting fits on the other folds: both classes needed
            raise UserError(f"{member_dirs[0]}: out-of-fold rows outside {f} do not hold both classes (folds: "
                            f"{', '.join(sorted(set(folds)))}): the combination cannot be cross-fitted")
    P = contracts.probabilities(P, "the members' out-of-fold predictions").reshape(P.shape)
    if masses is None and hedge == "on":
        raise UserError("--hedge=on needs every member's ImageNet masses (k-fold runs of a backbone with an "
                        "ImageNet classifier)")
    return ids, y, folds, P, excluded, masses


class _OofFit:
    """The combination fitted on some rows of the out-of-fold predictions and applied to others."""

    def __init__(self, P, y, masses, space, temperature, weights):
        self.P, self.y, self.masses = P, y, masses
        self.space, self.temperature, self.weights = space, temperature, weights

    def fit(self, rows, with_hedge):
        """(space, weights, hedge, temperature, floor): the floor is fitted last, on the rest."""
        P, y = self.P[rows], self.y[rows]
        sp, w, t, _ = _fit_combination(P, y, self.space, self.temperature, self.weights)
        h = fit_hedge(P, y, w, sp, self.masses[rows]) if with_hedge else None
        return sp, w, h, t, fit_floor(self.apply(rows, sp, w, h, t), y)

    def apply(self, rows, sp, w, h, t, eps=0.0):
        P = self.P[rows]
        if h is not None:
            return combine(P, w, sp, 1.0, h, self.masses[rows], eps)
        return combine(P, w, sp, t, floor=eps)

    def cross_fitted(self, folds, with_hedge) -> tuple[np.ndarray, np.ndarray]:
        """Each fold's rows combined as fitted on the other folds: without and with the floor."""
        out = np.zeros((2, len(self.y)))
        for f in sorted(set(folds)):
            te = folds == f
            *rule, eps = self.fit(~te, with_hedge)
            out[0, te], out[1, te] = self.apply(te, *rule), self.apply(te, *rule, eps)
        return out[0], out[1]


def _write_oof_ensemble(member_dirs, out, report, ids, y, folds, p, excluded, masses):
    """The one model (members + the combination fitted on every fold), its report and the
    cross-fitted predictions."""
    h = report["hedge"]
    members = [predictor.load_model(d) for d in member_dirs]
    classifiers = None
    if h is not None:
        cfgs = [oof.run_config(d) for d in member_dirs]
        # A member's backbone, with its size: NAME@SIZE or --image_size (KFoldConfig.parts).
        classifiers = [imagenet_classifier(name, c.weights, size, name=f"member{k}_imagenet")
                       for k, (c, (name, size)) in enumerate(zip(cfgs, (c.parts()[0] for c in cfgs)))]
    _clear(out)
    model = build_ensemble(members, report["weights"], report["space"], report["temperature"], hedge=h,
                           classifiers=classifiers, floor=report["floor"])
    model.save(files.join(out, "model.keras"))
    files.write_run_readme(out, model.name, predictor.input_size(model), False)
    files.write_text(files.join(out, "ensemble.json"), json.dumps(report, indent=1))
    oof.write_oof(files.join(out, "oof_predictions.csv"), ids, y, folds, p, excluded, masses)
