"""The Kaggle file-name rules, once: `cat.N.jpg` / `dog.N.jpg` are labeled, `N.jpg` is a test photo.

Every tool that reads a Kaggle folder (records, predict, evaluate, outliers, explore, bench)
asks this module what a file name means, so they all agree on which files count.
"""

from __future__ import annotations

import dataclasses
import re

LABELS = {"cat": 0, "dog": 1}
UNLABELED = -1
# Content is checked separately; these are the names a photo may carry.
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "gif", "bmp")

_SUFFIX = "|".join(IMAGE_SUFFIXES)
# ASCII digits only: Unicode digits (１, ٣) would make ids Kaggle does not have.
_LABELED = re.compile(rf"^(cat|dog)\.([0-9]+)\.({_SUFFIX})$", re.IGNORECASE)
_TEST = re.compile(rf"^([0-9]+)\.({_SUFFIX})$", re.IGNORECASE)
_ID = re.compile(r"^(?:(cat|dog)\.)?([0-9]+)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class KaggleName:
    id: str  # "cat.12", "dog.7" or "42" (leading zeros dropped, prefix lower-cased)
    label: int  # 0 cat, 1 dog, UNLABELED for a test photo

    @property
    def labeled(self) -> bool:
        return self.label != UNLABELED


def _number(digits: str) -> str:
    """Digits without leading zeros, as text: no int() (Python refuses int() of over 4,300 digits)."""
    return digits.lstrip("0") or "0"


def number_order(id_: str) -> tuple[int, str]:
    """Sort key of canonical test ids in numeric order (no int(): ids may be arbitrarily long)."""
    return len(id_), id_


def parse(filename: str) -> KaggleName | None:
    """What a file name means, or None when it is not a Kaggle photo name."""
    m = _LABELED.match(filename)
    if m:
        kind = m.group(1).lower()
        return KaggleName(f"{kind}.{_number(m.group(2))}", LABELS[kind])
    m = _TEST.match(filename)
    if m:
        return KaggleName(_number(m.group(1)), UNLABELED)
    return None


def id_label(id_: str) -> int | None:
    """The label a canonical id carries in its name (cat.N 0, dog.N 1, N UNLABELED), None for other text."""
    m = _ID.match(id_)
    if not m:
        return None
    return LABELS[m.group(1).lower()] if m.group(1) else UNLABELED


def name_problem(filename: str, labeled: bool) -> str:
    """Why `filename` is not a photo name of a labeled (or test) folder, in a few words."""
    expected = "cat.N.jpg or dog.N.jpg" if labeled else "N.jpg"
    suffix = filename.rpartition(".")[2].lower() if "." in filename else ""
    if suffix not in IMAGE_SUFFIXES:
        return f"not an image file name (suffix {'.' + suffix if suffix else 'missing'}; expected {expected})"
    if labeled:
        if _TEST.match(filename):
            return f"unlabeled name N.jpg in a labeled folder (expected {expected})"
        if re.match(r"^(cat|dog)\.", filename, re.IGNORECASE):
            return f"number missing after the cat./dog. prefix (expected {expected})"
        return f"name has no cat./dog. prefix (expected {expected})"
    if _LABELED.match(filename):
        return f"labeled name in an unlabeled (test) folder (expected {expected})"
    return f"name is not a number (expected {expected})"


def normalize_id(token: str) -> str | None:
    """An id as written by a person (cat.123, CAT.0123.jpg, 42.jpg) -> its canonical form."""
    token = token.strip()
    name = parse(token)
    if name is not None:
        return name.id
    m = _ID.match(token)
    if not m:
        return None
    return f"{m.group(1).lower()}.{_number(m.group(2))}" if m.group(1) else _number(m.group(2))

