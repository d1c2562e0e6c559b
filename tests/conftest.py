"""Shared test fixtures. Real photos are read from ../shared/data, never copied into the repo."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from catdog_tf.config import BuildConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KAGGLE200 = SHARED_DATA / "kaggle200"
KAGGLE_NATIVE = SHARED_DATA / "kaggle_native"


def require(path: Path) -> Path:
    """A shared-data path a test needs: a missing one fails the test loudly (never a silent skip)."""
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read real photos from ../shared/data (see its README)")
    return path


def jpeg_bytes(h=24, w=32, seed=0, mode="RGB", fmt="JPEG", **save_kw) -> bytes:
    """A tiny synthetic image with random content."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **save_kw)
    return buf.getvalue()


def real_records(tmp_path_factory, ids: range, **build_kw) -> str:
    """Records of real kaggle200 photos cat.N/dog.N for N in ids (linked, not copied)."""
    from catdog_tf.data import shards

    require(KAGGLE200 / "train")
    root = tmp_path_factory.mktemp("photos")
    for i in ids:
        for c in ("cat", "dog"):
            (root / f"{c}.{i}.jpg").symlink_to(KAGGLE200 / "train" / f"{c}.{i}.jpg")
    out = root.parent / f"{root.name}-rec"
    shards.build([str(root)], BuildConfig(out=str(out), workers=2, **build_kw))
    return str(out)


@pytest.fixture
def kaggle_dir(tmp_path):
    """A small valid Kaggle layout: train/ with 20 cats + 20 dogs, test/ with 6 images."""
    root = tmp_path / "kaggle"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for i in range(20):
        (root / "train" / f"cat.{i}.jpg").write_bytes(jpeg_bytes(seed=i))
        (root / "train" / f"dog.{i}.jpg").write_bytes(jpeg_bytes(seed=100 + i, h=30, w=20))
    for i in range(1, 7):
        (root / "test" / f"{i}.jpg").write_bytes(jpeg_bytes(seed=200 + i))
    return root


def pytest_report_header(config):
    return f"shared data: {SHARED_DATA} ({'present' if KAGGLE200.is_dir() else 'MISSING'})"


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(module: str, args: list[str], n: int = 2, timeout: int = 900) -> list[str]:
    """`python -m MODULE ARGS` as n local workers of one MultiWorkerMirroredStrategy job on
    127.0.0.1; every worker must exit 0. Returns each worker's output (stdout + stderr)."""
    import json
    import subprocess
    import sys

    import tempfile

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(n)]}
    procs, logs = [], []
    for i in range(n):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        # Output to files, not pipes: a worker blocked on a full pipe would stall the whole job.
        logs.append(tempfile.TemporaryFile("w+"))
        procs.append(subprocess.Popen([sys.executable, "-u", "-m", module, *args], cwd=REPO, env=env,
                                      stdout=logs[-1], stderr=subprocess.STDOUT, text=True))
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            p.kill()
    outs = []
    for f in logs:
        f.seek(0)
        outs.append(f.read())
        f.close()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    return outs


def tiny_classifier(size: int, seed: int, name: str):
    """A small random image classifier (0..255 input, P(dog) out): a cheap model or ensemble member."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name=name)
