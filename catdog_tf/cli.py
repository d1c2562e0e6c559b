"""What every `python -m catdog_tf.<tool>` shares: flags generated from a config dataclass,
and one wrapper that turns a user's error into one line (no traceback) and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import sys
import tempfile
import types
import typing
import zipfile
from typing import Any, Callable

from absl import app, flags, logging

from catdog_tf.fields import accepts
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
        if accepts(field):
            help_ = f"{help_} ({accepts(field)})"
        if meta.get("choices") and not is_list:
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
    cfg = cls(**values, **overrides)
    # A flag given on the command line that this mode never reads is a misunderstanding: refused.
    for name, why in cfg.ignored().items():
        if name in FLAGS and FLAGS[name].present:
            raise UserError(f"--{name}: {why}")
    return cfg


def no_extra_args(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    if _tf_error(e):
        return f"{type(e).__name__}: {e.message.strip().splitlines()[0] if e.message.strip() else ''}"
    if isinstance(e, _DATA_ERRORS):
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return str(e).strip() or type(e).__name__


# Errors a damaged or foreign input file raises inside the libraries that read it, wherever no
# reader named the file first (catdog_tf.files.reading does where it can).
_DATA_ERRORS = (json.JSONDecodeError, UnicodeError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError)


def _tf_error(e: BaseException) -> bool:
    """A TensorFlow error (tf.errors.OpError: a missing or damaged file, disk full, a peer that
    never came, ...): TensorFlow is looked up, never imported here: a tool that never loaded it
    raised none of these."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return errors is not None and isinstance(e, errors.OpError)


def _own_flags_in_help(main: Callable) -> None:
    """--help lists the flags of the main module: make every flag this package defined for the
    tool (extra flags, aliases) the main module's, and give a console script (whose __main__ is
    a generated wrapper) the entry module's docstring as its description."""
    here = sys.argv[0]
    mine = {id(f) for f in FLAGS.flags_by_module_dict().get(here, [])}
    for module, defined in list(FLAGS.flags_by_module_dict().items()):
        if module != here and (module.startswith("catdog_tf") or module == main.__module__):
            for f in defined:
                if id(f) not in mine:
                    FLAGS.register_flag_by_module(here, f)
                    mine.add(id(f))
    entry, top = sys.modules.get(main.__module__), sys.modules.get("__main__")
    if entry is not None and top is not None and not (getattr(top, "__doc__", None) or "").strip():
        top.__doc__ = entry.__doc__


def error_line(e: BaseException) -> str | None:
    """The one line a tool prints for `e` when it is a user's error (bad input, a damaged or
    missing file, disk full: UserError, OSError, a TensorFlow error, a damaged file's parse
    error), else None: a bug, which keeps its traceback."""
    if isinstance(e, (UserError, OSError, *_DATA_ERRORS)) or _tf_error(e):
        return f"error: {_one_line(e)}"
    return None


# TensorFlow's C++ start-up lines: printed at import through fd 2, past TF_CPP_MIN_LOG_LEVEL.
_TF_NOISE = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
                       r"cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with fd 2 on a temporary file, then passes on every line it printed
    but its start-up notices (which no setting silences)."""
    if "tensorflow" in sys.modules:
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        for line in tmp.read().decode("utf-8", "replace").splitlines():
            if not _TF_NOISE.search(line):
                print(line, file=sys.stderr)


def run(main: Callable[[list[str]], Any], define: Callable[[], None], *, tensorflow: bool = True) -> None:
    """`app.run(main)` after `define()`: the error boundary of every tool. A user's error (a
    UserError, an OSError, a TensorFlow error on a file, a damaged input) ends the run with
    `error: <one line>` and exit status 2, never a traceback; anything else is a bug and keeps
    its traceback. tensorflow=False: a tool that never loads it (its start-up lines are
    silenced otherwise, unless --verbosity is given)."""
    define()
    _own_flags_in_help(main)

    def guarded(argv):
        if not FLAGS["verbosity"].present:  # TF's INFO lines (collectives, SavedModel) drown the progress lines
            logging.set_verbosity(logging.WARNING)
            if tensorflow:
                _import_tensorflow_quietly()
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - re-raised unless a user's error
            line = error_line(e)
            if line is None:
                raise
            print(line, file=sys.stderr)
            sys.exit(2)

    def parse(argv):
        try:
            return FLAGS(argv)
        except flags.Error as e:  # an unknown flag, a value of the wrong type or not among the choices
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg.removeprefix('flag ')}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded, flags_parser=parse)
