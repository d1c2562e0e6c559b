"""Stage 2 inside k-fold (training/fold_tops.py): each fold's top block fine-tuned out of fold,
on real photos with the offline EfficientNet-Lite0 weights at a small input size."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from catdog_tf import metrics
from catdog_tf.config import FINETUNE_ONLY, KFoldConfig
from catdog_tf.data import oof
from catdog_tf.errors import UserError
from catdog_tf.inference import predictor, serving
from catdog_tf.models import registry
from catdog_tf.models.head import build_head
from catdog_tf.training import crossfit, fold_tops
from conftest import real_records

FOLDS = ["fold1", "fold2", "fold3"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return real_records(tmp_path_factory, range(3100, 3136), folds=4, min_shards=1)


@pytest.fixture(scope="module")
def tuned(rec, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "lite0_ft1"
    cfg = KFoldConfig(backbone="efficientnet_lite0", image_size=128, records=rec, out=str(out), folds=FOLDS,
                      epochs=3, batch_size=16, pooling="gem", finetune_blocks=1, finetune_epochs=2,
                      finetune_lr=1e-3, cache_groups=["fold1+fold2", "fold3"])
    return cfg, crossfit.run(cfg)


def _fold_tails(cfg):
    """Each fold's trained top and head, loaded from <out>/stage2 into a fresh pretrained split."""
    bottom, top = fold_tops.bottom_and_top("efficientnet_lite0", "auto", 128, 1)
    parts = []
    for fold in FOLDS:
        tail = fold_tops._tail(top, "gem", fold)
        head = build_head(int(tail.output_shape[-1]), cfg.dropout)
        z = np.load(Path(cfg.out) / "stage2" / f"{fold}.npz")
        ws = [z[f"w{i}"] for i in range(len(tail.get_weights()) + 2)]
        tail.set_weights(ws[:-2])
        head.set_weights(ws[-2:])
        parts.append((tail, head))
    return bottom, top, parts


def test_stage2_predicts_out_of_fold_and_reports_both_stages(rec, tuned):
    cfg, report = tuned
    o = oof.read_oof(cfg.out)
    assert report["oof_log_loss"] == pytest.approx(metrics.log_loss(o.labels, o.p_dog), abs=1e-6)
    assert "stage1_oof_log_loss" in report and report["stage1_oof_log_loss"] != report["oof_log_loss"]
    assert [f["fold"] for f in report["per_fold"]] == FOLDS
    assert all(f["stage2_log_loss"] == pytest.approx(f["log_loss"]) for f in report["per_fold"])
    assert report["oof_log_loss"] < 0.5  # pretrained features, fine-tuned: still a classifier
    # Each fold's top moved away from the pretrained weights, and differently per fold.
    _, top, parts = _fold_tails(cfg)
    kernel0 = top.get_layer("top_conv").get_weights()[0]
    kernels = [t.get_layer("top_conv").get_weights()[0] for t, _ in parts]
    assert all(np.abs(k - kernel0).max() > 1e-5 for k in kernels)
    assert np.abs(kernels[0] - kernels[1]).max() > 1e-6
    # BatchNorm was not trained (inference mode): its statistics are the pretrained ones.
    bn0 = top.get_layer("top_bn").get_weights()
    for t, _ in parts:
        for a, b in zip(t.get_layer("top_bn").get_weights(), bn0):
            np.testing.assert_array_equal(a, b)


def test_exported_member_is_the_mean_logit_of_every_fold_top(rec, tuned):
    cfg, _ = tuned
    model = predictor.load_model(cfg.out)
    ids, _, p_model = predictor.predict_records(model, rec, "fold0", 16)
    images = registry.load_images([Path(rec).parent / (Path(rec).name[:-4]) / f"{i}.jpg" for i in ids], 128)
    bottom, _, parts = _fold_tails(cfg)
    logits = []
    for tail, head in parts:
        f = (tail(bottom(images)) + tail(bottom(tf.image.flip_left_right(images)))) / 2
        w, b = head.get_weights()  # the logit itself: a float32 sigmoid saturates
        logits.append(np.asarray(f, np.float64) @ w[:, 0] + b[0])
    assert np.std(logits, axis=0).mean() > 1e-3  # the folds differ: averaging them matters
    np.testing.assert_allclose(p_model, tf.sigmoid(np.mean(logits, axis=0)).numpy(), rtol=2e-4, atol=1e-5)
    # Its standard-layer rewrite (serving, LiteRT) scores the same.
    plain = serving.plain_keras(model)
    np.testing.assert_allclose(np.asarray(plain(images)).reshape(-1), p_model, rtol=1e-4, atol=1e-5)


def test_a_stopped_run_resumes_at_the_next_fold_and_new_settings_redo_it(tuned, capsys):
    cfg, report = tuned
    out = Path(cfg.out)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "stage2").iterdir()}
    assert sorted(stamps) == [f"{f}.npz" for f in FOLDS]
    (out / "kfold.json").unlink()  # as if stopped before the end
    (out / "stage2" / "fold3.npz").unlink()
    again = crossfit.run(cfg)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stage2").iterdir()}
    assert after["fold1.npz"] == stamps["fold1.npz"] and after["fold2.npz"] == stamps["fold2.npz"]
    assert again["per_fold"][0]["log_loss"] == pytest.approx(report["per_fold"][0]["log_loss"], abs=1e-6)
    capsys.readouterr()
    # Another stage-2 learning rate: every fold is redone.
    crossfit.run(dataclasses.replace(cfg, finetune_lr=3e-4))
    assert all(p.stat().st_mtime_ns not in stamps.values() for p in (out / "stage2").iterdir())
    assert json.loads((out / "kfold.json").read_text())["config"]["finetune_lr"] == 3e-4


def test_stage2_settings_are_ignored_without_it_and_fusions_are_refused(rec, tmp_path):
    plain = KFoldConfig(backbone="efficientnet_lite0", records=rec, folds=FOLDS)
    assert set(FINETUNE_ONLY) <= set(plain.ignored())
    assert not set(FINETUNE_ONLY) & set(dataclasses.replace(plain, finetune_blocks=1).ignored())
    # A head-only run does not depend on the stage-2 settings it never reads.
    assert crossfit._result_settings(dataclasses.asdict(plain)) == crossfit._result_settings(
        dataclasses.asdict(dataclasses.replace(plain, finetune_lr=0.5)))
    with pytest.raises((UserError, ValueError), match="needs one backbone"):
        KFoldConfig(backbone="efficientnet_lite0+efficientnet_lite1", records=rec, finetune_blocks=1)
    assert KFoldConfig(finetune_blocks=2).resolved_out().endswith("_ft2")
