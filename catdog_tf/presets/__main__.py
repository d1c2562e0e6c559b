"""`python -m catdog_tf.presets` lists the presets; `--shell NAME` prints one for scripts/reproduce.sh."""

import sys

from catdog_tf import presets
from catdog_tf.errors import UserError


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--shell"] and len(argv) == 2:
            print(presets.load(argv[1]).shell())
            return 0
        if argv:
            raise UserError("usage: python -m catdog_tf.presets [--shell NAME]")
        for name in presets.names():
            p = presets.load(name)
            print(f"{name:8s} {p.kind:8s} {p.tool:6s} {' '.join(p.members)}\n         {p.description}\n"
                  f"         flags: {' '.join(p.flag_args()) or '(the tool defaults)'}")
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
