"""The package's shape: modules stay small, imports go one way, no cycles (function-level
imports count), and every tool's flags come from its config dataclass."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "catdog_tf"
MAX_LINES = 450
MAX_FUNCTION_LINES = 60
# Layers in the order data flows; a module may import its own layer or an earlier one.
LAYERS = ["data", "models", "training", "inference", "tools", "bench"]


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def imports_of(path: Path, mods: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported catdog_tf module, line, at module top) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                     for a in node.names]
        for n in names:
            if n.startswith("catdog_tf"):
                while n not in mods and "." in n:
                    n = n.rsplit(".", 1)[0]
                found.append((n, node.lineno, id(node) in top))
    return found


def test_no_module_over_450_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_no_function_over_60_lines():
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{name}:{node.lineno} {node.name}"] = n
    assert long == {}


def test_no_import_cycles():
    mods = modules()
    graph = {m: {i for i, _, _ in imports_of(p, mods) if i != m and i != "catdog_tf"} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_data_flows_one_way():
    mods = modules()
    wrong = []
    for m, p in mods.items():
        lm = layer(m)
        for i, line, _ in imports_of(p, mods):
            li = layer(i)
            if lm is not None and li is not None and li > lm:
                wrong.append(f"{m}:{line} imports {i}")
    assert wrong == []


# Siblings kept apart although the order above allows the import: inference serves models and
# reads a k-fold run's files (data/oof.py) without pulling in the trainers.
APART = {("inference", "training")}


def test_inference_does_not_import_training():
    mods = modules()
    wrong = [f"{m}:{line} imports {i}" for m, p in mods.items() for i, line, _ in imports_of(p, mods)
             if len(m.split(".")) > 1 and len(i.split(".")) > 1 and (m.split(".")[1], i.split(".")[1]) in APART]
    assert wrong == []


TOOLS = ["records", "train", "kfold", "ensemble", "evaluate", "predict", "export", "outliers", "backbones", "explore"]
ENTRIES = {f"catdog_tf.{t}" for t in TOOLS}
# Local imports kept on purpose: heavy optional dependencies a caller may never need.
LOCAL_IMPORTS_ALLOWED = {"tensorflow_datasets", "tensorflow", "matplotlib", "h5py", "scipy", "PIL", "tqdm",
                         "tf_keras"}  # tf_keras: an optional alternative the benchmark compares against
# Our modules that import TensorFlow at their top: explore's folder path must not pay for it.
LOCAL_MODULES_ALLOWED = {"catdog_tf.data.schema", "catdog_tf.files", "catdog_tf.data.manifest"}


def test_imports_at_module_top():
    local = []
    for m, p in modules().items():
        if m in ENTRIES:  # entries import the library inside main: --help answers before TensorFlow loads
            continue
        tree = ast.parse(p.read_text())
        top = set(map(id, tree.body))
        guarded = {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top and id(node) not in guarded:
                name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                full = {f"{name}.{a.name}" for a in node.names} | {name}
                if (name or "").split(".")[0] not in LOCAL_IMPORTS_ALLOWED and not full & LOCAL_MODULES_ALLOWED:
                    local.append(f"{m}:{node.lineno} {name}")
    assert local == []




@pytest.mark.parametrize("tool", TOOLS)
def test_entry_points_are_thin(tool):
    """An entry defines and parses flags and calls the library: no functions beyond define, main and run."""
    tree = ast.parse((PKG / f"{tool}.py").read_text())
    assert len(tree.body) and len((PKG / f"{tool}.py").read_text().splitlines()) <= 80
    assert sorted(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))) in (["main", "run"], ["define", "main", "run"])


def test_every_tool_has_a_console_script():
    import importlib
    import tomllib

    scripts = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {f"catdog-{t}": f"catdog_tf.{t}:run" for t in TOOLS}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


# What each tool's --help must list: its config's flags and the flags it adds itself.
EXTRA_FLAGS = {"records": ["input"], "train": ["cpu_devices", "model_dir"], "evaluate": ["out_dir"]}


@pytest.mark.parametrize("tool", TOOLS)
def test_help_lists_the_tools_own_flags_without_loading_tensorflow(tool):
    import subprocess
    import sys

    from catdog_tf import config

    cls = {"records": config.BuildConfig, "train": config.TrainConfig, "kfold": config.KFoldConfig,
           "ensemble": config.EnsembleConfig, "evaluate": config.EvaluateConfig, "predict": config.PredictConfig,
           "export": config.ExportConfig, "outliers": config.OutliersConfig, "backbones": config.BackbonesConfig,
           "explore": config.ExploreConfig}[tool]
    probe = (f"import sys; sys.argv = ['catdog-{tool}', '--help']; import catdog_tf.{tool} as m\n"
             "try:\n    m.run()\nexcept SystemExit:\n    pass\n"
             "print('TENSORFLOW LOADED' if 'tensorflow' in sys.modules else 'no tensorflow')")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert "no tensorflow" in out, out[-2000:]
    import dataclasses

    for name in [f.name for f in dataclasses.fields(cls)] + EXTRA_FLAGS.get(tool, []):
        assert f"--{name}:" in out or f"--[no]{name}:" in out, f"--{name} missing from catdog-{tool} --help"
    assert "python -m catdog_tf." in out.split("flags:")[0]  # the tool's own description comes first


def test_build_md_module_map_is_current():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(PKG.parent / "scripts" / "module_map.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
