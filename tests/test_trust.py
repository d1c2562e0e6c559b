"""Nothing silently wrong (issue 24): stale work is never reused, outputs keep their contracts
before exit 0, records keep the bytes they checked. Each test drives a class's one mechanism
with instances made here; test_fuzz.py generates more."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from catdog_tf import contracts, identity
from catdog_tf.config import TrainConfig
from catdog_tf.data import records
from catdog_tf.errors import UserError
from conftest import REPO, jpeg_bytes, tiny_classifier
from test_bad_input import build, cli, labeled_folder, one_line_error


def kaggle_folder(root, n=8, tests=5):
    labeled_folder(root / "train", n=n)
    (root / "test").mkdir(parents=True)
    for i in range(1, tests + 1):
        (root / "test" / f"{i}.jpg").write_bytes(jpeg_bytes(seed=300 + i))
    return root


# ------------------------------------------------------------------ identity: stale work is redone


def test_claim_keeps_work_of_the_same_identity_and_removes_other(tmp_path):
    said = []
    (tmp_path / "model.keras").write_text("old")
    assert not identity.claim(str(tmp_path), {"a": 1}, ["model.keras"], said.append, "the model")
    assert not (tmp_path / "model.keras").exists() and "no identity recorded" in said[-1]
    (tmp_path / "model.keras").write_text("new")
    assert identity.claim(str(tmp_path), {"a": 1}, ["model.keras"], said.append, "the model")
    assert (tmp_path / "model.keras").read_text() == "new"
    assert not identity.claim(str(tmp_path), {"a": 2}, ["model.keras"], said.append, "the model")
    assert "changed: a" in said[-1] and not (tmp_path / "model.keras").exists()
    assert json.loads((tmp_path / identity.FILE).read_text()) == {"a": 2}


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    d = tmp_path_factory.mktemp("trust")
    build([labeled_folder(d / "p", n=12)], d / "rec", val_fraction=0.25)
    return str(d / "rec")


def _train(rec, out, **kw):
    from catdog_tf.training import train

    cfg = TrainConfig(**{"backbone": "efficientnet_lite0", "weights": "none", "records": rec, "out": str(out),
                         "image_size": 32, "epochs1": 1, "epochs2": 0, "batch_size": 8, **kw})
    return train.train(cfg)


def test_a_rerun_with_other_flags_redoes_the_stages_it_changes(rec, tmp_path, capsys):
    out = tmp_path / "run"
    first = _train(rec, out)
    w1 = (out / "stage1.weights.h5").read_bytes()
    capsys.readouterr()
    again = _train(rec, out)  # same flags: finished, nothing redone
    assert "nothing to do" in capsys.readouterr().err and again["val_log_loss"] == first["val_log_loss"]
    _train(rec, out, dropout=0.5)  # a stage-1 setting: stage 1 redone, flags.json new
    err = capsys.readouterr().err
    assert "already done" not in err and "changed: config.dropout" in err
    assert json.loads((out / "flags.json").read_text())["config"]["dropout"] == 0.5
    assert (out / "stage1.weights.h5").read_bytes() != w1
    w2 = (out / "stage1.weights.h5").read_bytes()
    _train(rec, out, dropout=0.5, epochs2=1, unfreeze_blocks=1, stage2_cache="off",
           augmentation="flip")  # stage-2 settings only: stage 1 kept
    err = capsys.readouterr().err
    assert "stage 1 already done" in err and (out / "stage1.weights.h5").read_bytes() == w2
    assert json.loads((out / "flags.json").read_text())["config"]["epochs2"] == 1


def test_a_run_interrupted_after_new_flags_leaves_no_stale_model(rec, tmp_path):
    from catdog_tf.training import train

    out = tmp_path / "run"
    _train(rec, out)
    assert (out / "model.keras").exists()
    cfg = TrainConfig(backbone="efficientnet_lite0", weights="none", records=rec, out=str(out), image_size=32,
                      epochs1=3, epochs2=0, batch_size=8)
    identity.claim(str(out), train._identity(cfg), train._PRODUCTS, print, "the exported model", record="flags.json")
    # What a run with new flags does first: flags.json describes it, and the old model is gone.
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    assert json.loads((out / "flags.json").read_text())["config"]["epochs1"] == 3


# ------------------------------------------------------------------ records: the bytes checked are the bytes stored


def test_a_rebuild_rewrites_a_shard_whose_bytes_changed(tmp_path):
    p = labeled_folder(tmp_path / "p", n=6)
    m = build([p], tmp_path / "rec")
    shard = tmp_path / "rec" / m["splits"]["train"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    m2 = build([p], tmp_path / "rec")
    for s in m2["splits"].values():
        for sh in s["shards"]:
            assert records.sha256_file(str(tmp_path / "rec" / sh["file"])) == sh["sha256"]
    assert len(list(records.read_examples(str(tmp_path / "rec")))) == 12


def test_a_photo_that_changes_between_check_and_store_is_refused(tmp_path, monkeypatch):
    p = labeled_folder(tmp_path / "p", n=4)
    real = records.check

    def check_then_change(c, *a, **kw):
        res = real(c, *a, **kw)
        if c.id == "cat.1":
            (p / "cat.1.jpg").write_bytes(jpeg_bytes(seed=999))
        return res

    monkeypatch.setattr(records, "check", check_then_change)
    with pytest.raises(records.RecordsError, match="cat.1.jpg: changed while the build read it"):
        build([p], tmp_path / "rec")


def test_strict_refuses_before_touching_a_good_build(tmp_path):
    p = labeled_folder(tmp_path / "p", n=4)
    good = build([p], tmp_path / "rec")
    (p / "cat.9.jpg").write_bytes(b"not a photo")
    with pytest.raises(records.RecordsError, match="--strict"):
        build([p], tmp_path / "rec", strict=True)
    assert json.loads((tmp_path / "rec" / "manifest.json").read_text())["created"] == good["created"]


def test_a_photo_too_wide_for_jpeg_is_skipped_not_a_failed_build(tmp_path):
    from PIL import Image

    p = labeled_folder(tmp_path / "p", n=3)
    Image.new("RGB", (70000, 1)).save(p / "dog.50.png")
    m = build([p], tmp_path / "rec")
    assert [s["file"] for s in m["skipped"]] == [str(p / "dog.50.png")]
    assert "cannot be stored as a JPEG" in m["skipped"][0]["reason"]


# ------------------------------------------------------------------ outputs: contracts before exit 0


def test_contracts_refuse_what_would_be_a_silently_wrong_output():
    with pytest.raises(UserError, match="not probabilities"):
        contracts.probabilities([0.2, float("nan")], "x")
    with pytest.raises(UserError, match="no 0/1 label"):
        contracts.labels([0, 1, -1], "x")
    with pytest.raises(UserError, match="not finite"):
        contracts.finite([np.nan, 1.0], "weights")
    with pytest.raises(UserError, match="no prediction"):
        contracts.complete(["1", "2"], ["1", "2", "3"], "sub.csv")
    with pytest.raises(UserError, match="twice"):
        contracts.complete(["1", "1"], ["1"], "sub.csv")
    contracts.complete(["2", "1"], ["1", "2"], "sub.csv")


def test_predict_on_records_that_lost_a_test_photo_writes_nothing(tmp_path):
    root = kaggle_folder(tmp_path / "k")
    (root / "test" / "3.jpg").write_bytes(jpeg_bytes(seed=1)[:100])  # truncated: the build skips it
    build([root], tmp_path / "rec")
    tiny_classifier(32, 0, "m").save(tmp_path / "m.keras")
    r = cli("predict", f"--model={tmp_path / 'm.keras'}", f"--records={tmp_path / 'rec'}",
            f"--out={tmp_path / 'sub.csv'}", "--tta=none")
    one_line_error(r, "have no prediction", "3")
    assert not (tmp_path / "sub.csv").exists()


def test_scoring_or_fitting_a_test_split_is_refused(tmp_path):
    build([kaggle_folder(tmp_path / "k")], tmp_path / "rec")
    tiny_classifier(32, 0, "m").save(tmp_path / "m.keras")
    r = cli("evaluate", f"--model={tmp_path / 'm.keras'}", f"--records={tmp_path / 'rec'}", "--split=test")
    one_line_error(r, "unlabeled", "evaluation")
    r = cli("ensemble", f"--member={tmp_path / 'm.keras'}", f"--member={tmp_path / 'm.keras'}",
            f"--records={tmp_path / 'rec'}", "--split=test", f"--out={tmp_path / 'ens'}")
    one_line_error(r, "unlabeled", "ensemble")
    assert not (tmp_path / "ens").exists()


def test_the_submission_written_is_read_back(tmp_path, monkeypatch):
    from catdog_tf import files
    from catdog_tf.inference import predict

    real = files.write_text
    monkeypatch.setattr(files, "write_text", lambda path, text: real(path, text[: len(text) // 2]))
    with pytest.raises(UserError, match="differs"):
        predict.write_submission(str(tmp_path / "s.csv"), ["1", "2", "3"], np.asarray([0.1, 0.5, 0.9]))
    assert not (tmp_path / "s.csv").exists()


# ------------------------------------------------------------------ multi-worker: checked and bounded


@pytest.mark.parametrize("tf_config, needle", [
    ("[]", "a JSON object is needed"), ('{"cluster": 5}', "must be objects"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "not in the cluster"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "task index 3"),
    ('{"cluster": {"worker": "h:1"}}', "host:port"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}}', "without a 'task'")])
def test_a_malformed_tf_config_is_one_line(tf_config, needle, tmp_path):
    tiny_classifier(32, 0, "m").save(tmp_path / "m.keras")
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes())
    r = subprocess.run([sys.executable, "-m", "catdog_tf.predict", f"--model={tmp_path / 'm.keras'}",
                        str(tmp_path / "p.jpg")], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CONFIG": tf_config})
    one_line_error(r, "TF_CONFIG", needle)


def test_workers_whose_peers_never_come_stop_with_one_line(tmp_path):
    from conftest import free_ports

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}),
           "CATDOG_RENDEZVOUS_TIMEOUT_S": "5"}
    tiny_classifier(32, 0, "m").save(tmp_path / "m.keras")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "catdog_tf.predict", f"--model={tmp_path / 'm.keras'}",
                        f"--images={tmp_path}", f"--out={tmp_path / 's.csv'}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode != 0 and time.time() - t0 < 100
    assert "waiting for the 2 workers" in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not all of them came within 5 s" in errors[0], r.stderr[-2000:]
    assert not (tmp_path / "s.csv").exists()
