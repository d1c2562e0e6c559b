"""The files a k-fold run leaves for the tools after it: the out-of-fold predictions
(`oof_predictions.csv`, one row per photo) and the settings it was made with (`kfold.json`).

Written by training/crossfit.py; read by the ensemble, evaluation and a student's soft targets
(teacher_targets, which also reads a Kaggle submission `id,label` for the test photos).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from catdog_tf import contracts, files
from catdog_tf.config import KFoldConfig
from catdog_tf.data import kaggle
from catdog_tf.errors import UserError

FILE = "oof_predictions.csv"
REPORT = "kfold.json"  # the run's settings and figures, written last: the run is finished
OOF_HEADER = "id,label,fold,p_dog"
# Also written: whether the photo was kept out of training, and the ImageNet cat and dog mass
# the backbone's own classifier gives it (inputs of the ensemble's hedge; empty without one).
OOF_EXTRA = ",excluded,imagenet_cat,imagenet_dog"


def write_oof(path, ids, labels, folds, p_dog, excluded=None, masses=None) -> None:
    contracts.probabilities(p_dog, f"{path}: out-of-fold predictions", ids)  # never a NaN row written
    n = len(ids)
    excluded = np.zeros(n, bool) if excluded is None else excluded
    mass = [("", "")] * n if masses is None else [(f"{c:.6g}", f"{d:.6g}") for c, d in masses]
    files.write_text(path, OOF_HEADER + OOF_EXTRA + "\n" + "".join(
        f"{i},{int(t)},{k},{q:.8f},{int(e)},{c},{d}\n"
        for i, t, k, q, e, (c, d) in zip(ids, labels, folds, p_dog, excluded, mass)))


@dataclasses.dataclass
class OOF:
    """A k-fold run's out-of-fold predictions, one row per photo."""

    ids: list[str]
    labels: np.ndarray
    folds: list[str]
    p_dog: np.ndarray
    excluded: np.ndarray  # bool: kept out of training
    masses: np.ndarray | None  # [n, 2] ImageNet cat and dog mass, or None


def read_oof(path: str) -> OOF:
    """A k-fold run's folder or its oof_predictions.csv (older files lack the extra columns)."""
    p = files.join(path, FILE) if files.isdir(path) else str(path)
    if not files.exists(p):
        raise UserError(f"{p}: no out-of-fold predictions file (a k-fold run's folder or its oof_predictions.csv)")
    header, *lines = files.read_text(p).splitlines() or [""]
    if header.strip() not in (OOF_HEADER, OOF_HEADER + OOF_EXTRA):
        raise UserError(f"{p}: not an out-of-fold predictions file (header {header.strip()!r})")
    rows = [line.split(",") for line in lines]
    has_mass = bool(rows) and all(len(r) > 6 and r[5] != "" for r in rows)
    try:
        for n, r in enumerate(rows, 2):
            if len(r) < 4 or not r[0]:
                raise ValueError(f"line {n}: {len(r)} field(s)")
        labels = np.asarray([float(r[1]) for r in rows])
        p_dog = np.asarray([float(r[3]) for r in rows])
        masses = np.asarray([[float(r[5]), float(r[6])] for r in rows]) if has_mass else None
    except ValueError as e:
        raise UserError(f"{p}: not an out-of-fold predictions file ({e})") from None
    ids = [r[0] for r in rows]
    contracts.unique(ids, p)
    if masses is not None:
        contracts.probabilities(masses, f"{p}: ImageNet masses", ids)
    contracts.probabilities(p_dog, p, ids)
    named = np.asarray([kaggle.id_label(i) for i in ids], dtype=object)
    clash = [i for i, t, n in zip(ids, labels, named) if n is not None and n != kaggle.UNLABELED and n != t]
    if clash:  # the id's own name is the label (cat.N / dog.N)
        raise UserError(f"{p}: {len(clash)} row(s) carry a label other than their id's, e.g. {clash[0]}")
    excluded = np.asarray([len(r) > 4 and r[4] == "1" for r in rows], bool)
    return OOF(ids, labels, [r[2] for r in rows], p_dog, excluded, masses)


SUBMISSION_HEADER = "id,label"


def _submission(p: str, lines: list[str]) -> dict[str, float]:
    """A Kaggle submission's lines after its `id,label` header (label = P(dog)) as {id: P(dog)}."""
    rows = [line.split(",") for line in lines if line.strip()]
    try:
        for n, r in enumerate(rows, 2):
            if len(r) != 2 or kaggle.normalize_id(r[0]) is None:
                raise ValueError(f"line {n}: not an id,P(dog) row")
        ids, p_dog = [kaggle.normalize_id(r[0]) for r in rows], np.asarray([float(r[1]) for r in rows])
    except ValueError as e:
        raise UserError(f"{p}: not a submission file ({e})") from None
    contracts.unique(ids, p)
    return dict(zip(ids, contracts.probabilities(p_dog, p, ids)))


def teacher_targets(paths: list[str], ids) -> np.ndarray:
    """A teacher's P(dog) for each of `ids`, in that order (float32), from out-of-fold files or
    folders and submission files; a photo found in two files or in none is an error."""
    by_id: dict[str, float] = {}
    for path in paths:
        p = files.join(path, FILE) if files.isdir(path) else str(path)
        if not files.exists(p):
            raise UserError(f"{p}: no teacher predictions file (out-of-fold predictions or a submission)")
        header, *lines = files.read_text(p).splitlines() or [""]
        if header.strip() == SUBMISSION_HEADER:
            got = _submission(p, lines)
        else:
            o = read_oof(p)
            got = dict(zip(o.ids, o.p_dog))
        twice = sorted(set(got) & set(by_id))
        if twice:
            raise UserError(f"{p}: {len(twice)} photo(s) already have a teacher prediction in another file, "
                            f"e.g. {twice[0]}")
        by_id.update(got)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UserError(f"{', '.join(paths)}: no teacher prediction for {len(missing)} photo(s), e.g. {missing[:3]}")
    return np.asarray([by_id[i] for i in ids], np.float32)


def run_config(folder: str) -> KFoldConfig:
    """The settings a k-fold run folder was made with (its kfold.json), checked like flags."""
    path = files.join(folder, REPORT)
    report = files.read_json(path, "k-fold report")
    c = report.get("config") if isinstance(report, dict) else None
    if not isinstance(c, dict) or not isinstance(c.get("backbone"), str) or \
            not isinstance(c.get("weights"), (str, type(None))):
        raise UserError(f"{path}: not a k-fold report (no config with a backbone and weights)")
    names = {f.name for f in dataclasses.fields(KFoldConfig)}
    try:
        return KFoldConfig(**{k: v for k, v in c.items() if k in names})
    except (UserError, TypeError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None
