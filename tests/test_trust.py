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
from catdog_tf.data import manifest, photos, shards, sources
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
    from catdog_tf.training import two_stage

    cfg = TrainConfig(**{"backbone": "efficientnet_lite0", "weights": "none", "records": rec, "out": str(out),
                         "image_size": 32, "epochs1": 1, "epochs2": 0, "batch_size": 8, **kw})
    return two_stage.train(cfg)


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
    from catdog_tf.training import two_stage

    out = tmp_path / "run"
    _train(rec, out)
    assert (out / "model.keras").exists()
    cfg = TrainConfig(backbone="efficientnet_lite0", weights="none", records=rec, out=str(out), image_size=32,
                      epochs1=3, epochs2=0, batch_size=8)
    identity.claim(str(out), two_stage._identity(cfg), two_stage._PRODUCTS, print, "the exported model", record="flags.json")
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
            assert shards.sha256_file(str(tmp_path / "rec" / sh["file"])) == sh["sha256"]
    assert len(list(manifest.read_examples(str(tmp_path / "rec")))) == 12


def test_a_photo_that_changes_between_check_and_store_is_refused(tmp_path, monkeypatch):
    p = labeled_folder(tmp_path / "p", n=4)
    real = photos.check

    def check_then_change(c, *a, **kw):
        res = real(c, *a, **kw)
        if c.id == "cat.1":
            (p / "cat.1.jpg").write_bytes(jpeg_bytes(seed=999))
        return res

    monkeypatch.setattr(photos, "check", check_then_change)
    with pytest.raises(sources.RecordsError, match="cat.1.jpg: changed while the build read it"):
        build([p], tmp_path / "rec")


def test_strict_refuses_before_touching_a_good_build(tmp_path):
    p = labeled_folder(tmp_path / "p", n=4)
    good = build([p], tmp_path / "rec")
    (p / "cat.9.jpg").write_bytes(b"not a photo")
    with pytest.raises(sources.RecordsError, match="--strict"):
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
    from catdog_tf.inference import predictor

    real = files.write_text
    monkeypatch.setattr(files, "write_text", lambda path, text: real(path, text[: len(text) // 2]))
    with pytest.raises(UserError, match="differs"):
        predictor.write_submission(str(tmp_path / "s.csv"), ["1", "2", "3"], np.asarray([0.1, 0.5, 0.9]))
    assert not (tmp_path / "s.csv").exists()


# ------------------------------------------------------------------ multi-worker: checked and bounded


@pytest.mark.parametrize("tf_config, needle", [
    ("[]", "a JSON object is needed"), ('{"cluster": 5}', "must be objects"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "not in the cluster"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "task index 3"),
    ('{"cluster": {"worker": "h:1"}}', "host:port"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}}', "without a 'task'"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "ps", "index": 0}}', "'chief' and 'worker'"),
    ('{"cluster": {"evaluator": ["h:1"]}, "task": {"type": "evaluator", "index": 0}}', "'chief' and 'worker'"),
    ('{"cluster": {"chief": ["h:1", "h:2"]}, "task": {"type": "chief", "index": 1}}', "exactly one")])
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


# ------------------------------------------------------------------ the adversarial pass of session 8


@pytest.mark.parametrize("n", [0, 1, 7, 300])
@pytest.mark.parametrize("shard_mb", [0.01, 1.0, 100.0])
def test_a_split_never_gets_more_shards_than_photos(n, shard_mb):
    from types import SimpleNamespace

    from catdog_tf.config import BuildConfig

    items = [SimpleNamespace(height=4000, width=6000)] * n  # big photos: the size rule asks for many shards
    k = shards._num_shards(items, BuildConfig(shard_mb=shard_mb))
    assert 1 <= k <= max(n, 1)


@pytest.mark.parametrize("spec", ["efficientnet_lite0@8", "efficientnet_lite0@99999999999999999999",
                                  "efficientnet_lite0@3000", "efficientnet_lite0@\u0663\u0660\u0660",
                                  "efficientnet_lite0@300+efficientnet_lite1@1"])
def test_a_fused_backbone_size_is_bounded_like_image_size(spec):
    from catdog_tf.config import KFoldConfig

    with pytest.raises(UserError, match="16..2048"):
        KFoldConfig(backbone=spec)


def test_a_split_named_twice_or_validating_on_training_photos_is_refused(tmp_path):
    build([labeled_folder(tmp_path / "p", n=8)], tmp_path / "rec", folds=3)
    rec = str(tmp_path / "rec")
    for split in ("fold0+fold0", "fold1+fold2+fold1"):
        with pytest.raises(UserError, match="twice"):
            manifest.split_count(rec, split)
    for train_split, val_split, fold in (("fold0+fold1", "fold1", None), ("train", "fold1", 2),
                                         ("fold2", "validation", 2)):
        with pytest.raises(UserError, match="also in --train_split"):
            _train(rec, tmp_path / "run", train_split=train_split, val_split=val_split, fold=fold)
        assert not (tmp_path / "run").exists()


def test_too_many_unfreeze_blocks_is_refused_before_stage_1(rec, tmp_path):
    with pytest.raises(UserError, match="--unfreeze_blocks=99: efficientnet_lite0 has"):
        _train(rec, tmp_path / "run", epochs2=1, unfreeze_blocks=99)
    assert not (tmp_path / "run").exists()


def test_an_input_folder_is_keyed_by_every_file_inside(tmp_path):
    d = tmp_path / "teacher"
    (d / "sub").mkdir(parents=True)
    (d / "oof_predictions.csv").write_text("a")
    (d / "sub" / "x").write_text("b")
    first = identity.file_digest(str(d))
    (d / "sub" / "x").write_text("c")
    assert identity.file_digest(str(d)) not in (first, None)
    assert identity.file_digest(str(tmp_path / "missing")) is None


def test_the_feature_cache_key_sees_a_change_to_any_weight():
    import keras

    from catdog_tf.training import features

    model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4) for _ in range(12)])
    before = features._weights_fingerprint(model)
    w = model.layers[6].kernel
    w.assign(w.numpy() + 1e-3)  # a middle layer: neither among the first nor the last tensors
    assert features._weights_fingerprint(model) != before


@pytest.mark.parametrize("rows, needle", [
    (["cat.1,0,fold0,0.1", "cat.1,0,fold0,0.2", "dog.1,1,fold1,0.9"], "appear twice"),
    (["cat.1,1,fold0,0.1", "dog.1,1,fold1,0.9"], "label other than their id's"),
    (["dog.7,0,fold0,0.1", "cat.2,0,fold1,0.2"], "label other than their id's")])
def test_out_of_fold_rows_that_repeat_or_contradict_their_id_are_refused(tmp_path, rows, needle):
    from catdog_tf.data import oof

    (tmp_path / "oof.csv").write_text(oof.OOF_HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match=needle):
        oof.read_oof(str(tmp_path / "oof.csv"))


@pytest.mark.parametrize("report", [[], {"config": []}, {"config": {"backbone": 5}},
                                    {"config": {"backbone": "efficientnet_lite0", "weights": 3}},
                                    {"config": {"backbone": "efficientnet_lite0", "weights": "auto", "epochs": -1}}])
def test_a_k_fold_report_of_the_wrong_shape_is_one_error(tmp_path, report):
    from catdog_tf.data import oof

    (tmp_path / "kfold.json").write_text(json.dumps(report))
    with pytest.raises(UserError, match="kfold.json"):
        oof.run_config(str(tmp_path))


@pytest.mark.parametrize("edit", [
    lambda m: m.update(store_size="32"), lambda m: m.update(folds=[2]), lambda m: m.update(max_side=-4),
    lambda m: next(iter(m["splits"].values())).update(unlabeled="x"),
    lambda m: next(iter(m["splits"].values())).update(cat=None),
    lambda m: next(iter(m["splits"].values())).update(excluded=-1)])
def test_manifest_fields_of_the_wrong_type_are_refused(tmp_path, edit):
    build([labeled_folder(tmp_path / "p", n=4)], tmp_path / "rec")
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    edit(m)
    (tmp_path / "rec" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="manifest"):
        manifest.split_count(str(tmp_path / "rec"), "train")


@pytest.mark.parametrize("bad", ["[]", '{"splits": []}', '{"splits": {"train": {"shards": [{"file": 5}]}}}',
                                 '{"splits": {"train": {"count": 1, "shards": [{"file": "../../x"}]}}}', "{"])
def test_a_rebuild_over_a_malformed_manifest_builds(tmp_path, bad):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "manifest.json").write_text(bad)
    m = build([labeled_folder(tmp_path / "p", n=4)], tmp_path / "rec")
    assert m["written"] == 8 and manifest.split_count(str(tmp_path / "rec"), "train") > 0


def test_records_whose_photos_are_not_their_stored_size_name_the_folder(tmp_path):
    from catdog_tf import cli as catdog_cli
    from catdog_tf.data import pipeline

    build([labeled_folder(tmp_path / "p", n=4)], tmp_path / "rec", store_size=32)
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    m["store_size"] = 48  # a manifest that lies about its photos
    (tmp_path / "rec" / "manifest.json").write_text(json.dumps(m))
    ds = pipeline.make_dataset(str(tmp_path / "rec"), "train", 48, 4)
    with pytest.raises(Exception) as e:
        list(ds)
    line = catdog_cli.error_line(e.value)
    assert str(tmp_path / "rec") in line and "store_size" in line


def test_explore_reads_a_records_folder_through_the_manifest_checks(tmp_path):
    from catdog_tf.tools.survey import scan

    build([labeled_folder(tmp_path / "p", n=4)], tmp_path / "rec")
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    shard = tmp_path / "rec" / m["splits"]["train"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: TFRecord's checksum fails
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        list(scan.iter_records(str(tmp_path / "rec")))
    m["splits"]["train"]["shards"][0]["file"] = "../p/cat.0.jpg"
    (tmp_path / "rec" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="plain file name"):
        scan.record_shards(str(tmp_path / "rec"))


def test_export_into_a_folder_holding_another_model_is_refused(tmp_path):
    from catdog_tf.inference import serving

    run = tmp_path / "run"
    run.mkdir()
    tiny_classifier(32, 0, "m").save(run / "model.keras")
    before = (run / "model.keras").read_bytes()
    with pytest.raises(UserError, match="inside --out"):
        serving.export(str(run / "model.keras"), str(run))
    with pytest.raises(UserError, match="no export wrote"):
        serving.export(_copy(run / "model.keras", tmp_path / "elsewhere.keras"), str(run))
    assert (run / "model.keras").read_bytes() == before


@pytest.mark.parametrize("make", [
    lambda: __import__("catdog_tf.config").config.OutliersConfig(weights="none"),
    lambda: __import__("catdog_tf.config").config.OutliersConfig(weights=None),
    lambda: __import__("catdog_tf.config").config.BackbonesConfig(classify=True, weights="none")])
def test_imagenet_predictions_from_random_weights_are_refused(make):
    with pytest.raises(UserError, match="random weights cannot give"):
        make()


def test_photos_as_arguments_and_a_folder_are_refused_together(tmp_path):
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes())
    r = cli("predict", f"--model={tmp_path / 'm.keras'}", f"--images={tmp_path}", tmp_path / "p.jpg")
    one_line_error(r, "give one or the other")


# ------------------------------------------------------------------ an adversarial pass of session 9


def test_an_output_folder_that_holds_another_tools_work_or_an_input_is_refused(tmp_path):
    from catdog_tf import files

    for tool, record in files.TOOL_RECORDS.items():
        d = tmp_path / f"by_{tool}"
        d.mkdir()
        (d / record).write_text("{}")
        for other in files.TOOL_RECORDS:
            if other != tool:
                with pytest.raises(UserError, match=f"holds the work of `{tool}`"):
                    files.check_out(str(d), other)
        files.check_out(str(d), tool)  # its own folder: a rerun
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "f.csv").write_text("x")
    for out, inputs, scanned in ((tmp_path / "in", {"member": [str(tmp_path / "in")]}, ()),
                                 (tmp_path / "in", {"soft_targets": str(tmp_path / "in" / "sub" / "f.csv")}, ()),
                                 (tmp_path / "in" / "sub" / "rec", {"input": [str(tmp_path / "in")]}, ("input",))):
        with pytest.raises(UserError, match="inside"):
            files.check_out(str(out), "kfold", inputs, scanned)
    files.check_out(str(tmp_path / "new"), "kfold", {"weights": "auto", "records": str(tmp_path / "in")})
    with pytest.raises(UserError, match="destroy"):
        files.check_output_file(str(tmp_path / "in" / "sub" / "f.csv"), "out", {"model": str(tmp_path / "in" / "sub" / "f.csv")})


def test_ensemble_into_a_member_and_export_into_a_users_folder_are_refused(tmp_path):
    from catdog_tf.inference import ensembling, serving

    (tmp_path / "m1").mkdir()
    tiny_classifier(32, 0, "m").save(tmp_path / "m1" / "model.keras")
    before = (tmp_path / "m1" / "model.keras").read_bytes()
    with pytest.raises(UserError, match="inside --out"):
        ensembling.run([str(tmp_path / "m1")], "unused", str(tmp_path / "m1"))
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "README.md").write_text("mine")
    with pytest.raises(UserError, match="no export wrote"):
        serving.export(str(tmp_path / "m1" / "model.keras"), str(tmp_path / "proj"))
    assert (tmp_path / "proj" / "README.md").read_text() == "mine"
    assert (tmp_path / "m1" / "model.keras").read_bytes() == before


@pytest.mark.parametrize("make", [
    lambda: __import__("catdog_tf.config").config.TrainConfig(out=""),
    lambda: __import__("catdog_tf.config").config.ExportConfig(out=" "),
    lambda: __import__("catdog_tf.config").config.ExploreConfig(images=["a", ""]),
    lambda: __import__("catdog_tf.config").config.BuildConfig(exclude="")])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(make):
    with pytest.raises(UserError, match="must not be empty"):
        make()


def test_records_with_an_empty_input_is_refused(tmp_path):
    with pytest.raises(UserError, match="empty path"):
        build([""], tmp_path / "rec")


@pytest.mark.parametrize("layers", [
    lambda k: [k.Input((32, 32, 3)), k.layers.GlobalAveragePooling2D(), k.layers.Dense(2, activation="softmax")],
    lambda k: [k.Input((32, 48, 3)), k.layers.GlobalAveragePooling2D(), k.layers.Dense(1, activation="sigmoid")],
    lambda k: [k.Input((32, 32, 1)), k.layers.GlobalAveragePooling2D(), k.layers.Dense(1, activation="sigmoid")],
    lambda k: [k.Input((8,)), k.layers.Dense(1, activation="sigmoid")]])
def test_a_model_that_is_not_a_p_dog_model_is_refused_when_loaded(tmp_path, layers):
    import keras

    from catdog_tf.inference import predictor

    keras.Sequential(layers(keras)).save(tmp_path / "x.keras")
    with pytest.raises(UserError, match="not a P\\(dog\\) model"):
        predictor.load_model(str(tmp_path / "x.keras"))


def test_exclusion_ids_that_match_no_photo_are_said_and_refused_under_strict(tmp_path, capsys):
    (tmp_path / "ex.txt").write_text("cat.1\ncat.9999\n5\n")
    labeled_folder(tmp_path / "p", n=4)
    with pytest.raises(UserError, match="2 id\\(s\\) no labeled photo has"):
        build([tmp_path / "p"], tmp_path / "rec", exclude=str(tmp_path / "ex.txt"), strict=True)
    m = build([tmp_path / "p"], tmp_path / "rec", exclude=str(tmp_path / "ex.txt"))
    assert m["excluded"] == ["cat.1"] and "2 of 3 id(s) match no labeled photo" in capsys.readouterr().err


def test_explore_refuses_a_fifo_named_like_a_shard(tmp_path):
    from catdog_tf.tools.survey import scan

    os.mkfifo(tmp_path / "a.tfrecord")
    with pytest.raises(OSError, match="not a regular file"):
        list(scan.iter_records(str(tmp_path)))


def test_out_of_fold_files_that_cannot_be_cross_fitted_or_carry_bad_masses_are_refused(tmp_path):
    from catdog_tf.inference import ensembling
    from catdog_tf.data import oof

    ids = [f"{c}.{i}" for c in ("cat", "dog") for i in range(4)]
    y = np.asarray([i.startswith("dog") for i in ids], float)
    (tmp_path / "one").mkdir()
    oof.write_oof(tmp_path / "one" / "oof_predictions.csv", ids, y, ["fold0"] * 8, np.full(8, 0.5))
    with pytest.raises(UserError, match="cannot be cross-fitted"):
        ensembling.run_oof([str(tmp_path / "one")], str(tmp_path / "ens"))
    masses = np.full((8, 2), 0.4)
    masses[3, 1] = np.nan
    oof.write_oof(tmp_path / "m.csv", ids, y, ["fold0", "fold1"] * 4, np.full(8, 0.5), masses=masses)
    with pytest.raises(UserError, match="ImageNet masses"):
        oof.read_oof(str(tmp_path / "m.csv"))
    with pytest.raises(UserError, match="not probabilities"):
        oof.write_oof(tmp_path / "nan.csv", ids, y, ["fold0"] * 8, np.full(8, np.nan))
    assert not (tmp_path / "nan.csv").exists()


def test_a_new_batch_policy_redoes_a_full_image_stage_1():
    from catdog_tf.training import two_stage

    base = TrainConfig(records="r", head_augmentation="reference", epochs2=0)
    mixed = TrainConfig(records="r", head_augmentation="reference", epochs2=0, batch_policy="mixup")
    key = lambda c: two_stage._stage_key({"config": two_stage.dataclasses.asdict(c)}, 1, False)  # noqa: E731
    assert key(base) != key(mixed)


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return str(dst)


def test_more_folds_than_photos_of_a_class_are_refused(tmp_path):
    with pytest.raises(UserError, match="--folds=5: only 4 cat"):
        build([labeled_folder(tmp_path / "p", n=4)], tmp_path / "rec", folds=5)
    assert not (tmp_path / "rec" / "manifest.json").exists()


@pytest.mark.parametrize("kw, needle", [(dict(hedge="on"), "--hedge=on needs --oof"),
                                        (dict(floor="on"), "--floor=on needs --oof")])
def test_ensemble_flags_its_mode_would_ignore_are_refused(kw, needle):
    from catdog_tf.config import EnsembleConfig

    with pytest.raises(UserError, match=needle):
        EnsembleConfig(**kw)


def test_explore_of_a_folder_without_photos_is_an_error(tmp_path):
    (tmp_path / "pets" / "Cat").mkdir(parents=True)
    (tmp_path / "pets" / "Cat" / "cat.1.jpg").write_bytes(jpeg_bytes())  # one level too deep
    r = cli("explore", f"--images={tmp_path / 'pets'}", f"--out={tmp_path / 'rep'}", "--noprogress")
    one_line_error(r, "no photos found")


def test_a_contact_sheet_of_nothing_removes_the_earlier_one(tmp_path):
    from catdog_tf import plots

    (tmp_path / "worst.png").write_bytes(b"old")
    assert plots.contact_sheet([], str(tmp_path / "worst.png")) is None
    assert not (tmp_path / "worst.png").exists()


@pytest.mark.parametrize("cls, kw", [
    ("BuildConfig", dict(folds=3)), ("TrainConfig", dict(epochs2=0)), ("KFoldConfig", dict(head="lbfgs")),
    ("KFoldConfig", {}), ("EnsembleConfig", dict(oof=True)), ("EnsembleConfig", {}),
    ("EvaluateConfig", dict(predictions="p.csv")), ("EvaluateConfig", dict(images="d")), ("EvaluateConfig", {}),
    ("ExportConfig", {}), ("BackbonesConfig", {})])
def test_the_flags_a_mode_ignores_are_fields(cls, kw):
    import dataclasses

    from catdog_tf import config

    cfg = getattr(config, cls)(**kw)
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert cfg.ignored() and set(cfg.ignored()) <= fields


@pytest.mark.parametrize("tool, args, needle", [
    ("ensemble", ["--oof", "--member=m", "--split=fold0"], "--split: with --oof"),
    ("evaluate", ["--predictions=p.csv", "--tta=flip"], "--tta: --predictions scores a CSV"),
    ("train", ["--epochs2=0", "--lr2=0.1"], "--lr2: --epochs2=0"),
    ("backbones", ["--top=3"], "--top: it applies to --classify")])
def test_a_flag_the_chosen_mode_never_reads_is_refused(tool, args, needle):
    one_line_error(cli(tool, *args), needle)


def test_outliers_never_replace_a_reviewed_exclusion_list(tmp_path):
    from catdog_tf.tools import outlier_screen

    (tmp_path / "exclude.txt").write_text("cat.1  # kept after review\n")
    with pytest.raises(UserError, match="edited since this tool wrote it"):
        outlier_screen._check_unreviewed(str(tmp_path))
    (tmp_path / "summary.json").write_text(json.dumps({"exclude_sha256": shards.sha256_file(
        str(tmp_path / "exclude.txt"))}))
    outlier_screen._check_unreviewed(str(tmp_path))  # the tool's own list: a rerun may replace it
