"""What every output must satisfy before a tool writes it and exits 0 (NumPy only).

A violation is one UserError naming where the values came from; the caller writes nothing.
"""

from __future__ import annotations

import collections

import numpy as np

from catdog_tf.errors import UserError


def _first_bad(bad: np.ndarray, ids) -> str:
    i = int(np.flatnonzero(bad)[0])
    return f"{ids[i]}" if ids is not None and i < len(ids) else f"row {i}"


def probabilities(p, where: str, ids=None) -> np.ndarray:
    """P(dog) as float64: every value finite and in [0, 1]."""
    p = np.asarray(p, np.float64).reshape(-1)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise UserError(f"{where}: {int(bad.sum())} prediction(s) are not probabilities in [0, 1] (first: "
                        f"{_first_bad(bad, ids)} = {p[bad][0]})")
    return p


def labels(y, where: str, ids=None) -> np.ndarray:
    """Labels as float64, each 0 (cat) or 1 (dog): figures and fits need labeled photos."""
    y = np.asarray(y, np.float64).reshape(-1)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise UserError(f"{where}: {int(bad.sum())} of {len(y)} photo(s) carry no 0/1 label (first: "
                        f"{_first_bad(bad, ids)} = {y[bad][0]:g}); log loss and fitting need labeled photos "
                        "(cat.N / dog.N), not a test split")
    if not len(y):
        raise UserError(f"{where}: no labeled photo")
    return y


def finite(values, what: str) -> np.ndarray:
    """Fitted numbers (weights, temperatures, coefficients) that must all be finite."""
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)):
        raise UserError(f"{what} is not finite ({np.asarray(values).tolist()}): nothing written")
    return v


def unique(ids, where: str, then: str = "") -> None:
    """No id twice (two rows for one photo would count it twice, or contradict each other)."""
    counts = collections.Counter(ids)
    if len(counts) != len(ids):
        dup = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise UserError(f"{where}: ids {dup} appear twice{then}")


def complete(ids, expected, where: str) -> None:
    """Exactly one row for each expected id: none missing, none extra, none twice."""
    ids = list(ids)
    unique(ids, where, ": nothing written")
    seen = set(ids)
    expected = set(expected)
    missing, extra = sorted(expected - seen, key=lambda i: (len(i), i)), sorted(seen - expected)
    if missing:
        raise UserError(f"{where}: {len(missing)} test id(s) have no prediction (e.g. {', '.join(missing[:5])}; "
                        "a photo its source lists could not be read): nothing written")
    if extra:
        raise UserError(f"{where}: {len(extra)} prediction(s) for ids its source does not list "
                        f"(e.g. {', '.join(extra[:5])}): nothing written")
