"""Where the tables go: the stand-alone bench.md (+ bench.json) of a run, and the generated
blocks of BENCHMARKS.md, each between its markers

    <!-- bench:begin NAME -->
    ...generated, replaced by --update...
    <!-- bench:end NAME -->

Everything outside the markers is hand-written and kept as it is.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from catdog_tf.bench import tables
from catdog_tf.bench.plan import SECTIONS, Settings
from catdog_tf.errors import UserError

MARKER = re.compile(r"^<!-- bench:(begin|end) ([A-Za-z0-9_.-]+) -->[ \t]*$", re.MULTILINE)
DOC, DATA = "BENCHMARKS.md", "BENCHMARKS.json"


def begin(name: str) -> str:
    return f"<!-- bench:begin {name} -->"


def end(name: str) -> str:
    return f"<!-- bench:end {name} -->"


def load(path: str) -> dict:
    """The JSON of an earlier run, with its ratios and estimate recomputed from its rows."""
    try:
        data = json.loads(Path(path).read_text())
        s = Settings.from_dict(data["settings"])
        data["ratios"] = tables.compute_ratios(data["rows"], s)
        data["gpu"] = tables.gpu_estimate(data["rows"], s)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not the JSON of a benchmark run ({type(e).__name__}: {e})") from None
    return data


def spans(text: str, where: str) -> dict[str, tuple[int, int]]:
    """name -> (start, end) of the text between each block's begin and end lines."""
    out: dict[str, tuple[int, int]] = {}
    open_name, start = None, 0
    for m in MARKER.finditer(text):
        kind, name = m.groups()
        line = text.count("\n", 0, m.start()) + 1
        if kind == "begin":
            if open_name is not None:
                raise UserError(f"{where}:{line}: block {name} begins inside block {open_name}")
            if name in out:
                raise UserError(f"{where}:{line}: block {name} appears twice")
            open_name, start = name, m.end() + 1
        else:
            if name != open_name:
                raise UserError(f"{where}:{line}: end of block {name} without its begin")
            out[name], open_name = (min(start, m.start()), m.start()), None
    if open_name is not None:
        raise UserError(f"{where}: block {open_name} has no end marker")
    return out


def replace_blocks(text: str, new: dict[str, str], where: str) -> str:
    """`text` with the content of every marked block replaced by new[name]; the document's
    blocks and `new` must name the same blocks (no table silently left stale or dropped)."""
    found = spans(text, where)
    problems = []
    missing, extra = [n for n in new if n not in found], [n for n in found if n not in new]
    if missing:
        problems.append(f"no markers for block(s) {', '.join(missing)} (add them where the tables belong)")
    if extra:
        problems.append(f"this run makes no block(s) {', '.join(extra)} (remove their markers)")
    if problems:
        raise UserError(f"{where}: " + "; ".join(problems))
    out, pos = [], 0
    for name, (a, b) in sorted(found.items(), key=lambda kv: kv[1]):
        out += [text[pos:a], "\n", new[name].strip("\n"), "\n\n"]
        pos = b
    return "".join(out + [text[pos:]])


def standalone(data: dict) -> str:
    """bench.md: every block of the run, each between its markers, under its heading."""
    L = ["# Benchmark tables", "", "The explanations are in the repository's BENCHMARKS.md.", ""]
    section = None
    for b in tables.blocks(data):
        if b.section and b.section != section:
            L += [f"## {b.section}", ""]
            section = b.section
        if b.title:
            L += [f"### {b.title}", ""]
        L += [begin(b.name), "", b.text.strip("\n"), "", end(b.name), ""]
    failed = tables.failed_rows(data)
    if failed:
        L += ["## Failed rows", ""] + failed + [""]
    return "\n".join(L)


def _write(path: Path, text: str):
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_out(out: str, data: dict, with_json: bool = True) -> list[Path]:
    """bench.md (and bench.json) into the folder `out`."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "bench.md"]
    _write(written[0], standalone(data))
    if with_json:
        written.append(folder / "bench.json")
        _write(written[1], json.dumps(data, indent=1))
    return written


def check_updatable(quick: bool, sections: tuple[str, ...]) -> None:
    """BENCHMARKS.md and BENCHMARKS.json describe one full run of every section."""
    if quick:
        raise UserError("--update: a --quick run's figures are not meaningful; BENCHMARKS.md keeps full runs only")
    if tuple(sections) != SECTIONS:
        raise UserError(f"--update needs every section (this run: {','.join(sections)}): "
                        "BENCHMARKS.md and BENCHMARKS.json describe one run")


def check_document(folder: str) -> Path:
    """The BENCHMARKS.md that --update will rewrite, checked before a long run."""
    doc = Path(folder) / DOC
    if not doc.is_file():
        raise UserError(f"{doc}: not found (--update rewrites the blocks of an existing {DOC})")
    spans(doc.read_text(), str(doc))
    return doc


def update(folder: str, data: dict) -> list[Path]:
    """Rewrites the generated blocks of FOLDER/BENCHMARKS.md and writes FOLDER/BENCHMARKS.json
    (unless it already holds this data). Returns the files changed."""
    check_updatable(bool(data["settings"].get("quick")), tables.sections_of(data))
    if any("error" in r["result"] for r in data["rows"]):
        raise UserError("--update: some rows failed; BENCHMARKS.md left as it was")
    doc, js = check_document(folder), Path(folder) / DATA
    old = doc.read_text()
    new = replace_blocks(old, {b.name: b.text for b in tables.blocks(data)}, str(doc))
    changed = []
    if new != old:
        _write(doc, new)
        changed.append(doc)
    try:
        same = json.loads(js.read_text()) == json.loads(json.dumps(data))
    except (OSError, ValueError):
        same = False
    if not same:
        _write(js, json.dumps(data, indent=1))
        changed.append(js)
    return changed
