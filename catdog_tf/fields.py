"""How a config field is declared (`f`: default, flag help, what it accepts) and checked
(`validate`, run by every config dataclass deriving from `Checked` when it is made)."""

from __future__ import annotations

import dataclasses
import math
import numbers

from catdog_tf.errors import UserError


def f(default, help: str, *, choices=None, multi: bool = False, ge=None, gt=None, le=None, lt=None,
      distinct: bool = False):
    """A dataclass field with its flag help and what it accepts (mutable defaults become
    factories): `choices`, bounds `ge`/`gt`/`le`/`lt` (each element of a list), `distinct`
    list elements. validate() checks them; the flag's help states them."""
    meta = {"help": help, "choices": choices, "multi": multi, "distinct": distinct,
            "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
        "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def accepts(field: dataclasses.Field) -> str:
    """What a field accepts, for its flag's help: '' or e.g. '>= 1' or '>= 0, < 0.5'."""
    return ", ".join(f"{_OPS[k][0]} {v:g}" for k, v in field.metadata.get("bounds", {}).items())


def _problem(field: dataclasses.Field, value) -> str | None:
    """Why `value` is not acceptable for `field` (None: it is)."""
    meta = field.metadata
    if str(field.type).startswith("list") and not isinstance(value, (list, tuple)):
        return "must be a list"
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, str) and not v.strip():  # an unset $VAR: "" would mean the current folder
            return "must not be empty"
        if meta.get("choices") and v not in meta["choices"]:
            return f"must be one of {', '.join(map(str, meta['choices']))}"
        if isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number"
        for k, b in meta.get("bounds", {}).items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                return f"must be a number ({accepts(field)})"
            if not _OPS[k][1](v, b):
                return f"must be {accepts(field)}"
    if meta.get("distinct") and len(set(values)) != len(values):
        return "lists a value twice"
    return None


def validate(cfg) -> None:
    """Every field of the config dataclass `cfg` within what it declares, then the relations
    between fields (the class's `relations()`); the first violation is one UserError naming
    the flag, so a tool refuses it before any work."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if value is None:
            continue
        why = _problem(field, value)
        if why:
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            raise UserError(f"--{field.name}={shown}: {why}")
    why = cfg.relations()
    if why:
        raise UserError(why)


class Checked:
    """Config dataclasses validate themselves when made (from flags, by a notebook, or by
    dataclasses.replace)."""

    def __post_init__(self):
        validate(self)

    def relations(self) -> str | None:
        """What is wrong between fields (None: nothing)."""
        return None

    def ignored(self) -> dict[str, str]:
        """Fields this combination of settings never reads, with why: the CLI refuses them when
        given (a notebook's defaults are not "given", so only the command line checks this)."""
        return {}


def unread(names, why: str) -> dict[str, str]:
    return {n: why for n in names}
