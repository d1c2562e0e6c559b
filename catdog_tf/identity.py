"""Identity of resumable work: reused only when made from the same settings and inputs.

A stage, a run folder, a fold head or an export records the identity it was made with (the
settings that affect it and the checksums of its inputs) in `identity.json`. `claim()` keeps
its work when the identity matches and otherwise removes it, saying which settings changed, so
a rerun with other flags redoes the work instead of handing back a stale model, and a folder's
identity.json never describes files it did not make.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from catdog_tf import files

FILE = "identity.json"


def canonical(obj) -> object:
    """`obj` as plain JSON values (tuples become lists, dataclass dicts stay dicts)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True).encode()).hexdigest()


def file_digest(path: str | None) -> str | None:
    """sha256 of an input named by a setting (weights, soft targets), None for a keyword. A
    folder (a run whose files are read) digests the names and sha256 of every file inside."""
    if not path or not files.exists(path):
        return None
    if not files.isdir(path):
        return files.sha256_file(path)
    return digest([(f[len(str(path)):], files.sha256_file(f)) for f in files.walk_files(path)])


def changed(old, new, prefix: str = "") -> list[str]:
    """The keys (dotted) whose values differ between two identities."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += changed(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "everything"]


def recorded(folder: str, record: str = FILE) -> dict | None:
    """The identity a folder's work was made with, or None (none recorded, or unreadable)."""
    path = files.join(folder, record)
    if not files.exists(path):
        return None
    try:
        return files.read_json(path)
    except (ValueError, OSError):  # UserError is a ValueError: a damaged record is no identity
        return None


def claim(folder: str, identity: dict, products: list[str], log: Callable[[str], None], what: str, *,
          record: str = FILE, write: bool = True) -> bool:
    """Makes `folder` hold the work of `identity`. True when it already did (its products may be
    reused). Otherwise each of `products` (names inside folder: files or folders) is removed,
    the change is logged, the new identity recorded (in `record`), and False returned: redo the work."""
    identity = canonical(identity)
    old = recorded(folder, record)
    if old == identity:
        return True
    present = [p for p in products if files.exists(files.join(folder, p))]
    if present:
        why = "no identity recorded" if old is None else f"changed: {', '.join(changed(old, identity)[:6])}"
        log(f"{what} in {folder} was made with other settings or inputs ({why}): redone")
        for p in present:
            path = files.join(folder, p)
            files.rmtree(path) if files.isdir(path) else files.remove(path)
    if write:  # (a worker that is not the chief only reads)
        files.write_text(files.join(folder, record), json.dumps(identity, indent=1, sort_keys=True))
    return False
