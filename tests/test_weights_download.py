"""--weights=auto for a Keras application: the cached file, else Keras's download (timeout,
checksum), else one line. The download runs against a local HTTP server on 127.0.0.1 that plays
Keras's bucket ($CATDOG_KERAS_WEIGHTS_URL), so the whole path is tested offline."""

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

from catdog_tf.models import registry, weights
from conftest import REPO, free_ports
from test_bad_input import build, labeled_folder, one_line_error

NOTOP = "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A folder laid out like Keras's bucket, holding Xception's notop weights (random values, the
    real layout), served on 127.0.0.1; yields (base URL, sha256 of the file, request log)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    root = tmp_path_factory.mktemp("bucket")
    (root / "xception").mkdir()
    plain = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    with h5py.File(root / NOTOP, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, plain)
    sha = hashlib.sha256((root / NOTOP).read_bytes()).hexdigest()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", sha, requests
    server.shutdown()


def _with_hash(sha):
    """The registry's Xception entry with the served file's checksum (the real one is Google's)."""
    import dataclasses

    spec = registry.get("xception")
    return dataclasses.replace(spec, weight_hashes=(spec.weight_hashes[0], sha))


def test_auto_downloads_once_then_uses_the_cached_file(bucket, tmp_path, monkeypatch):
    url, sha, requests = bucket
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(weights.KERAS_BASE_URL_ENV, url)
    spec = _with_hash(sha)
    before = len(requests)
    path = weights.keras_weights(spec, "auto", False)
    assert path == str(tmp_path / "keras" / "models" / os.path.basename(NOTOP)) and len(requests) == before + 1
    assert weights.keras_weights(spec, "auto", False) == path and len(requests) == before + 1


def test_a_download_with_the_wrong_checksum_is_refused(bucket, tmp_path, monkeypatch):
    url, sha, _ = bucket
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(weights.KERAS_BASE_URL_ENV, url)
    with pytest.raises(weights.WeightsUnavailableError, match="download failed"):
        weights.keras_weights(_with_hash("0" * 64), "auto", False)
    assert not (tmp_path / "keras" / "models" / os.path.basename(NOTOP)).exists()


# The entry point as a user runs it, with the registry's checksum set to the served file's.
TRAIN = ("import dataclasses, sys; from catdog_tf.models import registry as b; s = b.REGISTRY['xception']; "
         "b.REGISTRY['xception'] = dataclasses.replace(s, weight_hashes=(s.weight_hashes[0], sys.argv.pop(1))); "
         "from catdog_tf import train; sys.argv[0] = 'catdog-train'; train.run()")


def test_train_xception_downloads_its_weights_and_trains(bucket, tmp_path):
    url, sha, requests = bucket
    rec = build([labeled_folder(tmp_path / "p", n=6)], tmp_path / "rec", val_fraction=0.34)
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), weights.KERAS_BASE_URL_ENV: url}
    r = subprocess.run([sys.executable, "-c", TRAIN, sha, "--backbone=xception", f"--records={tmp_path / 'rec'}",
                        f"--out={tmp_path / 'run'}", "--image_size=71", "--epochs1=1", "--epochs2=0",
                        "--batch_size=4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert any(p.endswith(os.path.basename(NOTOP)) for p in requests)
    assert (tmp_path / "run" / "model.keras").exists() and rec["written"] == 12


def test_train_xception_offline_is_one_line_and_writes_nothing(tmp_path):
    rec = tmp_path / "rec"
    build([labeled_folder(tmp_path / "p", n=4)], rec)
    closed = f"http://127.0.0.1:{free_ports(1)[0]}/"  # nothing listens there: an offline machine
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), weights.KERAS_BASE_URL_ENV: closed}
    r = subprocess.run([sys.executable, "-m", "catdog_tf.train", "--backbone=xception", f"--records={rec}",
                        "--val_split=none", f"--out={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    line = one_line_error(r, "xception", "download failed", "--weights=PATH")
    assert "\n" not in line and not (tmp_path / "run").exists()
