"""Named recipes, kept as data (one TOML file each, beside this module), as flax keeps configs/.

A preset names the members of the ensemble, the tool that trains each (`kfold`: a frozen
backbone with fold heads; `train`: two-stage fine-tuning) and that tool's flags beyond its
defaults. `scripts/reproduce.sh` runs one (PRESET=name); `python -m catdog_tf.presets` lists
them and prints one as shell variables for that script.

A preset of kind "student" is one backbone that `train` distills from an ensemble's
out-of-fold and test predictions (reproduce.sh STUDENT=name, after a k-fold ensemble).
"""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from pathlib import Path

from catdog_tf import config
from catdog_tf.errors import UserError

HERE = Path(__file__).resolve().parent
TOOLS = {"kfold": config.KFoldConfig, "train": config.TrainConfig}
KINDS = ("ensemble", "student")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    tool: str
    members: tuple[str, ...]
    flags: dict
    kind: str = "ensemble"

    def flag_args(self) -> list[str]:
        return [f"--{k}={v}" for k, v in self.flags.items()]

    def shell(self) -> str:
        """PRESET_TOOL, PRESET_MEMBERS and PRESET_FLAGS for `eval` in a shell script."""
        values = {"PRESET_KIND": self.kind, "PRESET_TOOL": self.tool, "PRESET_MEMBERS": " ".join(self.members),
                  "PRESET_FLAGS": " ".join(self.flag_args())}
        return "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def load(name: str) -> Preset:
    """The preset `name`, checked: its tool exists and its flags are valid settings of that tool,
    so a bad preset stops before any work. (Backbone names are the tools' to check: the registry
    loads TensorFlow, which listing presets does not need.)"""
    path = HERE / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"no preset {name!r}; presets: {', '.join(names())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    tool, members, flags = data.get("tool"), tuple(data.get("members", ())), dict(data.get("flags", {}))
    if tool not in TOOLS:
        raise UserError(f"{path}: tool must be one of {', '.join(TOOLS)}, not {tool!r}")
    if not members:
        raise UserError(f"{path}: no members")
    kind = data.get("kind", "ensemble")
    if kind not in KINDS:
        raise UserError(f"{path}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "student" and (tool != "train" or len(members) != 1):
        raise UserError(f"{path}: a student is one member trained by train (tool = \"train\")")
    cls = TOOLS[tool]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise UserError(f"{path}: {', '.join(unknown)}: not a flag of catdog_tf.{tool}")
    for m in members:
        name_, _, size = m.partition("@")
        kw = {"backbone": m} if tool == "kfold" else {"backbone": name_, "image_size": int(size) if size else None}
        cls(**{**flags, **kw})  # raises UserError naming the flag
    return Preset(name, str(data.get("description", "")), tool, members, flags, kind)
