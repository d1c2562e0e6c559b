"""What every `python -m catdog_tf.<tool>` shares: flags generated from a config dataclass,
and one wrapper that turns a user's error into one line (no traceback) and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, Callable

from absl import app, flags, logging

from catdog_tf.errors import UserError

FLAGS = flags.FLAGS


def _kind(tp) -> tuple[type, bool]:
    """(base type, is a list) of a field annotation such as `int | None` or `list[str] | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def define_flags(cls, *, skip: tuple[str, ...] = (), aliases: dict[str, str] | None = None) -> None:
    """One absl flag per field of the dataclass `cls`, with its default, help and choices."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    # Listed by --helpshort as the running tool's own flags, not cli.py's.
    kw = {"module_name": sys.argv[0]}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        base, is_list = _kind(hints[field.name])
        meta = field.metadata
        default, help_ = getattr(defaults, field.name), meta.get("help", "")
        if meta.get("choices"):
            flags.DEFINE_enum(field.name, default, list(meta["choices"]), help_, **kw)
        elif is_list and meta.get("multi"):
            definer = flags.DEFINE_multi_float if base is float else flags.DEFINE_multi_string
            definer(field.name, default or None, help_, **kw)
        elif is_list:
            flags.DEFINE_list(field.name, None if default is None else [str(v) for v in default], help_, **kw)
        elif base is bool:
            flags.DEFINE_bool(field.name, default, help_, **kw)
        elif base is int:
            flags.DEFINE_integer(field.name, default, help_, **kw)
        elif base is float:
            flags.DEFINE_float(field.name, default, help_, **kw)
        else:
            flags.DEFINE_string(field.name, default, help_, **kw)
    for alias, name in (aliases or {}).items():
        flags.DEFINE_alias(alias, name)


def from_flags(cls, **overrides):
    """The dataclass `cls` filled from the parsed flags of the same names."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides or field.name not in FLAGS:
            continue
        v = FLAGS[field.name].value
        base, is_list = _kind(hints[field.name])
        if is_list and v is not None:
            try:
                v = [base(x) for x in v]
            except ValueError as e:
                raise UserError(f"--{field.name}: {e}") from None
        if is_list and field.metadata.get("multi") and v is None and field.default is dataclasses.MISSING:
            v = []
        values[field.name] = v
    return cls(**values, **overrides)


def no_extra_args(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    if _file_error(e):
        return e.message.strip()
    return str(e).strip() or type(e).__name__


def _file_error(e: BaseException) -> bool:
    """A tf.io.gfile error about a path (catdog_tf.files reads and writes through gfile, whose
    errors are not OSErrors): missing, not a folder, permission, ... (TensorFlow is looked up,
    never imported here: a tool that never loaded it raised none of these)."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return errors is not None and isinstance(e, (
        errors.NotFoundError, errors.PermissionDeniedError, errors.AlreadyExistsError,
        errors.FailedPreconditionError, errors.UnauthenticatedError,
        errors.UnimplementedError))  # e.g. a scheme with no filesystem here (s3:// without its plugin)


def run(main: Callable[[list[str]], Any], define: Callable[[], None]) -> None:
    """`app.run(main)` after `define()`; a UserError or an OSError (missing file, disk full,
    permission; or the same from tf.io.gfile) ends the run with `error: <one line>` and exit
    status 2."""
    define()

    def guarded(argv):
        if not FLAGS["verbosity"].present:  # TF's INFO lines (collectives, SavedModel) drown the progress lines
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except (UserError, OSError) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - re-raised unless a gfile file error
            if not _file_error(e):
                raise
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
