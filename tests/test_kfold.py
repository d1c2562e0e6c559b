"""K-fold heads on cached features of real photos (offline EfficientNet-Lite0 weights)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from catdog_tf import metrics
from catdog_tf.config import GEM_P, KFoldConfig
from catdog_tf.data import manifest, shards
from catdog_tf.inference import ensembling, predictor, serving
from catdog_tf.models import head
from catdog_tf.models.blocks import all_layers
from catdog_tf.models.layers import GeneralizedMeanPooling2D
from catdog_tf.data import oof
from catdog_tf.training import crossfit, features
from catdog_tf.training.fit import fit_head
from catdog_tf.training.recipe import FitConfig
from conftest import KAGGLE200, REPO, real_records, require, run_workers
from catdog_tf.config import BuildConfig

@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """96 real photos (48 per class) in 4 folds; 3 of them on an exclusion list."""
    ex = tmp_path_factory.mktemp("ex") / "exclude.txt"
    ex.write_text("\n".join(EXCLUDED) + "\n")
    return real_records(tmp_path_factory, range(3000, 3048), folds=4, min_shards=1, exclude=str(ex))


EXCLUDED = ["cat.3000", "cat.3005", "dog.3001"]


@pytest.fixture(scope="module")
def lite0_run(rec, tmp_path_factory):
    out = tmp_path_factory.mktemp("kf") / "lite0"
    cfg = KFoldConfig(backbone="efficientnet_lite0", records=rec, out=str(out), folds=["fold1", "fold2", "fold3"],
                            epochs=6, batch_size=16, cache_groups=["fold1+fold2", "fold3"])
    return cfg, crossfit.run(cfg)


def test_oof_covers_each_photo_of_the_chosen_folds_once(rec, lite0_run):
    cfg, report = lite0_run
    o = oof.read_oof(cfg.out)
    ids, y, folds, p = o.ids, o.labels, o.folds, o.p_dog
    expected = {ex["id"]: f"fold{ex['fold']}" for ex in manifest.read_examples(rec) if ex["fold"] in (1, 2, 3)}
    assert sorted(ids) == sorted(expected) and len(ids) == report["count"]  # fold0 untouched, no repeats
    assert all(expected[i] == f for i, f in zip(ids, folds))  # the fold written is the photo's own
    assert np.array_equal(y, [float(i.startswith("dog.")) for i in ids])
    assert report["oof_log_loss"] == pytest.approx(metrics.log_loss(y, p), abs=1e-6)
    assert report["oof_log_loss"] < 0.4  # real ImageNet features separate cats from dogs out of fold
    assert [f["fold"] for f in report["per_fold"]] == ["fold1", "fold2", "fold3"]
    # Excluded photos: predicted out of fold like the rest, never trained on.
    in_folds = [i for i in EXCLUDED if i in expected]
    assert in_folds and sorted(np.asarray(ids)[o.excluded]) == sorted(in_folds)
    for f in report["per_fold"]:
        others = [i for i, k in expected.items() if k != f["fold"]]
        assert f["trained_on"] == len([i for i in others if i not in EXCLUDED]) < len(others) + 1
    assert report["cleaned_oof_log_loss"] == pytest.approx(metrics.log_loss(y[~o.excluded], p[~o.excluded]), abs=1e-6)
    lo, hi = report["oof_log_loss_ci95"]
    assert lo < report["oof_log_loss"] < hi
    # The backbone's own ImageNet classifier: cat mass on cats, dog mass on dogs, mostly.
    cat, dog = o.masses[:, 0], o.masses[:, 1]
    assert ((cat >= 0) & (dog >= 0) & (cat + dog <= 1 + 1e-5)).all()
    assert np.mean((dog > cat) == (y == 1)) > 0.8
    assert all(len(f["val_loss_by_epoch"]) == cfg.epochs for f in report["per_fold"])


def test_exported_model_is_the_mean_of_the_fold_heads(rec, lite0_run):
    cfg, report = lite0_run
    model = predictor.load_model(cfg.out)
    ids, _, p_model = predictor.predict_records(model, rec, "fold0", 32)
    # The same features through the averaged head by hand: mean of the fold heads' logits.
    pm = head.pooled_model("efficientnet_lite0", "auto", None)
    x, _, ids2 = features.cached(pm, rec, "fold0", 224)
    xf, _, _ = features.cached(pm, rec, "fold0", 224, flip=True)
    assert list(ids2) == list(ids) and cfg.tta_flip
    x = (x + xf) / 2  # flip test-time augmentation: the mean features give the mean logit
    z = np.load(f"{cfg.out}/fold_heads.npz")
    logits = [x @ z[f"{f}/0"][:, 0] + z[f"{f}/1"][0] for f in report["folds"]]
    assert np.std(logits, axis=0).mean() > 1e-3  # the fold heads differ: averaging them matters
    np.testing.assert_allclose(p_model, tf.sigmoid(np.mean(logits, axis=0)).numpy(), rtol=1e-4, atol=1e-6)


def test_finished_run_with_same_settings_is_not_redone(lite0_run, capsys):
    cfg, report = lite0_run
    mtime = (Path(cfg.out) / "model.keras").stat().st_mtime_ns
    assert crossfit.run(cfg) == json.loads((Path(cfg.out) / "kfold.json").read_text())
    assert "nothing to do" in capsys.readouterr().err
    # Caching elsewhere or in other groups gives the same features: still nothing to do.
    crossfit.run(dataclasses.replace(cfg, cache_groups=None, cache_dir=str(Path(cfg.out) / "other_cache")))
    assert "nothing to do" in capsys.readouterr().err
    assert (Path(cfg.out) / "model.keras").stat().st_mtime_ns == mtime
    assert report["records"] == manifest.content_fingerprint(cfg.records)  # a new exclusion list redoes the run


def test_averaged_head_equals_logit_mean_of_heads():
    import keras

    rng = np.random.default_rng(0)
    fit_cfg = FitConfig(epochs=1, lr=1e-3, batch_size=16, schedule="cosine")
    heads = [fit_head(rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64).astype("float32"), None,
                      fit_cfg, dropout=0.3, seed=k, verbose=0)[0] for k in range(3)]
    avg = head.average_heads(heads)
    x = rng.normal(size=(10, 8)).astype("float32")
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    mean_logit = np.mean([logit(h.predict(x, verbose=0)[:, 0].astype(np.float64)) for h in heads], axis=0)
    np.testing.assert_allclose(avg.predict(x, verbose=0)[:, 0], 1 / (1 + np.exp(-mean_logit)), rtol=1e-4)
    assert isinstance(avg, keras.Model)


def test_oof_ensemble_is_cross_fitted(rec, lite0_run, tmp_path):
    cfg, _ = lite0_run
    # A second member: the same backbone with other seeds and fewer epochs (cached features: fast).
    cfg2 = KFoldConfig(**{**cfg.__dict__, "out": str(tmp_path / "lite0b"), "epochs": 2, "seed": 7})
    crossfit.run(cfg2)
    r = ensembling.run_oof([cfg.out, cfg2.out], str(tmp_path / "ens"))
    assert r["count"] == 72 and r["folds"] == ["fold1", "fold2", "fold3"]
    # Cross-fitting can't beat the combination fitted on the very photos it is scored on.
    assert r["oof_log_loss"] >= r["fitted_log_loss"] - 1e-9
    o = oof.read_oof(tmp_path / "ens")
    y, p = o.labels, o.p_dog
    assert r["oof_log_loss"] == pytest.approx(metrics.log_loss(y, p), abs=1e-6)
    # auto keeps the ImageNet-mass hedge only when its cross-fitted figure is the lower one
    assert set(r["hedge_tried"]) == {"off", "on"}
    assert r["oof_log_loss"] == pytest.approx(min(r["hedge_tried"].values()))
    assert (r["hedge"] is not None) == (r["hedge_tried"]["on"] < r["hedge_tried"]["off"])
    # and the label-noise floor (fitted last) only when it lowers the cross-fitted figure
    assert set(r["floor_tried"]) == {"off", "on"}
    assert r["oof_log_loss"] == pytest.approx(min(r["floor_tried"].values()))
    assert (r["floor"] > 0) == (r["floor_tried"]["on"] < r["floor_tried"]["off"])
    assert r["cleaned_count"] == 72 - int(o.excluded.sum()) and o.excluded.any()
    ens = predictor.load_model(str(tmp_path / "ens"))
    assert {layer.name.split("_")[0] for layer in ens.layers if layer.name.startswith("member")} == {"member0", "member1"}
    # Fixed --weights are kept (normalized), with the temperature still fitted.
    fixed = ensembling.run_oof([cfg.out, cfg2.out], str(tmp_path / "fixed"), hedge="off", weights=[1.0, 3.0])
    assert fixed["weights"] == pytest.approx([0.25, 0.75])
    for h in ("on", "off"):  # either way one graph that reloads and predicts like the members combined
        r = ensembling.run_oof([cfg.out, cfg2.out], str(tmp_path / h), hedge=h, floor="on" if h == "off" else "off")
        assert r["floor"] >= 0 and (r["floor"] == 0 or h == "off")
        assert (r["hedge"] is None) == (h == "off")
        ens = predictor.load_model(str(tmp_path / h))
        ids, _, p_ens = predictor.predict_records(ens, rec, "fold0", 32)
        P = np.stack([predictor.predict_records(predictor.load_model(d), rec, "fold0", 32)[2] for d in (cfg.out, cfg2.out)], 1)
        if h == "off":
            np.testing.assert_allclose(p_ens, ensembling.combine(P, r["weights"], r["space"], r["temperature"],
                                                                 floor=r["floor"]), rtol=1e-4, atol=1e-6)
        else:
            assert np.abs(p_ens - ensembling.combine(P, r["weights"], r["space"])).max() > 1e-4


def test_mismatched_members_are_refused(lite0_run, tmp_path):
    cfg, _ = lite0_run
    lines = (tmp_path / "x.csv")
    src = open(f"{cfg.out}/oof_predictions.csv").read().splitlines()
    lines.write_text("\n".join(src[:-1]) + "\n")  # one photo fewer
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "oof_predictions.csv").write_text(lines.read_text())
    with pytest.raises(ValueError, match="other photos"):
        ensembling.run_oof([cfg.out, str(tmp_path / "short")], str(tmp_path / "ens"))


def test_feature_fusion_exports_one_graph(rec, tmp_path):
    """Fusion of two real offline backbones (--backbone=a+b): one head on the concatenated
    pooled features, exported as one graph that resizes per backbone."""
    cfg = KFoldConfig(backbone="efficientnet_lite0@200+efficientnet_lite1", records=rec, out=str(tmp_path / "fused"),
                      folds=["fold1", "fold2", "fold3"], epochs=6, batch_size=16, cache_dir=str(tmp_path / "cache"))
    r = crossfit.run(cfg)
    assert r["oof_log_loss"] < 0.4
    assert np.load(tmp_path / "fused" / "fold_heads.npz")["fold1/0"].shape == (2560, 1)
    assert oof.read_oof(str(tmp_path / "fused")).masses is None  # no one ImageNet classifier for a fusion
    assert sorted(f.name.split("-")[0] for f in (tmp_path / "cache").glob("*.npz"))[0] == "efficientnet_lite0_200_avg"
    model = predictor.load_model(str(tmp_path / "fused"))
    assert model.input_shape == (None, 240, 240, 3)  # the largest backbone's size; lite0 gets its 200 px in the graph
    assert model.get_layer("resize0_200").output.shape[1:3] == (200, 200)
    ids, y, p = predictor.predict_records(model, rec, "fold0")
    assert len(ids) == 24 and metrics.log_loss(y, p) < 0.5


def test_fused_backbones_take_their_own_sizes():
    assert KFoldConfig(backbone="a@300+b+c@380").parts() == [("a", 300), ("b", None), ("c", 380)]
    assert KFoldConfig(backbone="a", image_size=260).parts() == [("a", 260)]
    assert KFoldConfig(backbone="a@300+b@380").slug() == "a_300_b_380"
    with pytest.raises(ValueError, match="number of pixels"):
        KFoldConfig(backbone="a@big").parts()
    with pytest.raises(ValueError, match="NAME@SIZE"):
        KFoldConfig(backbone="a+b", image_size=300).parts()
    with pytest.raises(ValueError, match="NAME@SIZE"):
        KFoldConfig(backbone="a@300", image_size=260).parts()
    with pytest.raises(ValueError, match="number of pixels"):
        KFoldConfig(backbone="a@0").parts()
    assert KFoldConfig(backbone="a@300", head="lbfgs").resolved_out() == "runs/kfold/a_300_lbfgs"
    # A setting the chosen head never reads does not make a finished run stale.
    base = dataclasses.asdict(KFoldConfig(head="lbfgs"))
    assert crossfit._result_settings({**base, "epochs": 3, "lr": 1.0}) == crossfit._result_settings(base)
    assert crossfit._result_settings({**base, "l2": 0.5}) != crossfit._result_settings(base)
    adam = dataclasses.asdict(KFoldConfig())
    assert crossfit._result_settings({**adam, "l2": 0.5}) == crossfit._result_settings(adam)


def test_bad_inputs_get_clear_errors(rec, tmp_path):
    with pytest.raises(ValueError, match="exactly once"):
        crossfit._groups(["fold1", "fold2"], ["fold1", "fold1+fold2"])
    flat = tmp_path / "flat"
    (tmp_path / "p").mkdir()
    for i in range(4):
        (tmp_path / "p" / f"cat.{i}.jpg").symlink_to(require(KAGGLE200) / "train" / f"cat.{i + 3000}.jpg")
    shards.build([str(tmp_path / "p")], BuildConfig(out=str(flat), val_fraction=0.25, workers=1))
    r = subprocess.run([sys.executable, "-m", "catdog_tf.kfold", f"--records={flat}", f"--out={tmp_path / 'o'}"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "built without --folds" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "catdog_tf.kfold", f"--records={tmp_path / 'none'}"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "no manifest" in r.stderr and "Traceback" not in r.stderr


def test_cli_writes_report(rec, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "catdog_tf.kfold", "--backbone=efficientnet_lite0", f"--records={rec}",
                        f"--out={out}", "--epochs=2", "--batch_size=32", "--folds=fold0,fold1",
                        f"--cache_dir={tmp_path / 'cache'}"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["count"] == len(oof.read_oof(out).ids)
    assert "out-of-fold log loss" in r.stderr and "ETA" in r.stderr


def test_two_workers_share_the_extraction_and_the_chief_writes_once(rec, lite0_run, tmp_path):
    """`python -m catdog_tf.kfold` as two MultiWorkerMirrored workers on 127.0.0.1: each extracts
    half the photos and fits half the fold heads, both end with all of them, one writes; the
    out-of-fold predictions are one process's (to the features' float differences)."""
    cfg, single = lite0_run
    out, cache = tmp_path / "mw", tmp_path / "cache"
    outs = run_workers("catdog_tf.kfold", [
        "--backbone=efficientnet_lite0", f"--records={rec}", f"--out={out}", "--folds=fold1,fold2,fold3",
        "--epochs=6", "--batch_size=16", "--cache_groups=fold1+fold2,fold3", f"--cache_dir={cache}"])
    total = {"fold1+fold2": 0, "fold3": 0}
    for ex in manifest.read_examples(rec):
        if ex["fold"] in (1, 2, 3):
            total["fold3" if ex["fold"] == 3 else "fold1+fold2"] += 1
    for i, o in enumerate(outs):
        assert "MultiWorkerMirroredStrategy with 2 replica(s)" in o
        for group, m in total.items():  # worker i: photos i, i+2, ... of the group, plain and mirrored
            line = f"features: worker {i}/2 extracts {len(range(i, m, 2))} of {m} photos (efficientnet_lite0_224_avg {group}"
            assert o.count(line) == 2, (line, o[-2000:])
    assert "worker 0/2 fits the heads of fold1, fold3" in outs[0] and "worker 1/2 fits the heads of fold2" in outs[1]
    assert "the chief writes" in outs[1] and "wrote" in outs[0] and "wrote" not in outs[1]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "fold_heads.npz", "kfold.json", "model.keras",
                                                      "oof_predictions.csv", "tensorboard"]
    # The assembled features are the single process's, photo for photo.
    single_cache = Path(cfg.out).parent / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in single_cache.iterdir())
    for f in cache.iterdir():
        a, b = np.load(f), np.load(single_cache / f.name)
        assert list(a["ids"]) == list(b["ids"]) and (a["labels"] == b["labels"]).all()
        np.testing.assert_allclose(a["features"], b["features"], atol=1e-5)
    mw, one = oof.read_oof(out), oof.read_oof(cfg.out)
    assert mw.ids == one.ids and (mw.labels == one.labels).all()
    report = json.loads((out / "kfold.json").read_text())
    print(f"out of fold: two workers {report['oof_log_loss']:.6f}, one process {single['oof_log_loss']:.6f}; "
          f"largest difference in P(dog) {np.abs(mw.p_dog - one.p_dog).max():.2e}")
    np.testing.assert_allclose(mw.p_dog, one.p_dog, atol=1e-4)
    assert abs(report["oof_log_loss"] - single["oof_log_loss"]) < 1e-4
    assert [f["val_loss_by_epoch"] for f in report["per_fold"]] == [f["val_loss_by_epoch"] for f in single["per_fold"]]
    model = predictor.load_model(str(out))
    assert model.name == "catdog_kfold_efficientnet_lite0"


def test_two_workers_evaluate_and_predict_like_one_process(rec, lite0_run, kaggle_dir, tmp_path):
    """evaluate and predict under two MultiWorkerMirrored workers: each scores half the photos,
    both get all of them, the chief writes one JSON / one submission equal to one process's."""
    cfg, _ = lite0_run
    model = predictor.load_model(cfg.out)
    ids, y, p = predictor.predict_records(model, rec, "fold0", 16)
    outs = run_workers("catdog_tf.evaluate", [f"--model={cfg.out}", f"--records={rec}", "--split=fold0",
                                              "--batch_size=16", f"--json_out={tmp_path / 'ev' / 'ev.json'}"])
    assert all("MultiWorkerMirroredStrategy with 2 replica(s)" in o for o in outs)
    s = json.loads((tmp_path / "ev" / "ev.json").read_text())
    assert s["count"] == len(ids) == 24
    assert abs(s["log_loss"] - metrics.log_loss(y, p)) < 1e-6
    assert sorted(f.name for f in (tmp_path / "ev").iterdir()) == ["ev.json", "ev_plots"]
    sub = tmp_path / "sub.csv"
    outs = run_workers("catdog_tf.predict", [f"--model={cfg.out}", f"--images={kaggle_dir / 'test'}", f"--out={sub}"])
    assert "the chief writes" in outs[1]
    photos = predictor.scan_folder(str(kaggle_dir / "test"), labeled=False)
    one = predictor.predict_photos(model, photos, tta="flip")
    rows = dict(line.split(",") for line in sub.read_text().splitlines()[1:])
    assert sorted(rows) == sorted(photos.ids)
    np.testing.assert_allclose([float(rows[i]) for i in photos.ids], one, atol=2e-6)


def test_kfold_on_tf_filesystem(rec, lite0_run):
    """Records, feature cache and run folder on TF's in-memory ram:// filesystem (any gfile
    scheme: gs://, hdfs://): the same out-of-fold predictions as on local disk."""
    import uuid

    from catdog_tf import files

    cfg, _ = lite0_run
    root = f"ram://kfold-{uuid.uuid4().hex[:8]}"
    for f in Path(rec).iterdir():  # the records as they are, copied onto the other filesystem
        if f.is_file():
            files.write_bytes(files.join(root, "records", f.name), f.read_bytes())
    ram = dataclasses.replace(cfg, records=f"{root}/records", out=f"{root}/runs/lite0", cache_dir=None)
    report = crossfit.run(ram)
    assert files.listdir(f"{root}/runs") == ["cache", "lite0"]
    assert {"kfold.json", "model.keras", "oof_predictions.csv", "fold_heads.npz"} <= set(files.listdir(ram.out))
    a, b = oof.read_oof(ram.out), oof.read_oof(cfg.out)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.p_dog, b.p_dog, atol=1e-6)
    assert crossfit.run(ram)["oof_log_loss"] == report["oof_log_loss"]  # finished: found, not redone
    assert predictor.load_model(ram.out).name == "catdog_kfold_efficientnet_lite0"


def test_lbfgs_head_is_the_regularized_optimum_folded_into_the_head():
    """fit_logistic: the Keras head it returns computes the optimum of the L2-penalized logistic
    loss on standardized features (the gradient there is ~0), soft targets included, and a larger
    penalty shrinks the coefficients."""
    from scipy.special import expit
    from catdog_tf.training.fit import fit_logistic
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [0.5, 2.0, 5.0, 1.0], (400, 4)).astype(np.float32)  # offsets and scales differ
    t = expit((x - 3.0) @ np.array([2.0, -0.5, 0.2, 0.0]) + rng.normal(0, 0.5, 400))  # soft targets
    for l2 in (0.01, 0.1):
        h, hist = fit_logistic(x, t, l2, (x[:50], (t[:50] > 0.5).astype(float)))
        kernel, bias = h.get_weights()
        w, b = kernel.reshape(-1).astype(np.float64), float(bias[0])
        assert np.allclose(np.asarray(h(x, training=False)).reshape(-1), expit(x @ w + b), atol=1e-5)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        ws = w * sd  # the standardized-space coefficients
        g = expit(x @ w + b) - t
        grad = ((x - mu) / sd).T @ g / len(t) + l2 * ws
        assert np.abs(grad).max() < 1e-4 and abs(g.mean()) < 1e-4
        assert hist["val_loss"][0] == pytest.approx(metrics.log_loss((t[:50] > 0.5), expit(x[:50] @ w + b)), abs=1e-6)
        if l2 == 0.01:
            norm_small = np.linalg.norm(ws)
    assert np.linalg.norm(ws) < norm_small
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_logistic(x, t, 0.0)
    # A constant feature gets weight 0, not a huge weight cancelled by a huge bias.
    xc = np.concatenate([x, np.full((400, 1), 7.0, np.float32) + rng.normal(0, 1e-7, (400, 1)).astype(np.float32)], 1)
    h, _ = fit_logistic(xc, t, 0.01)
    kernel, bias = h.get_weights()
    assert kernel[-1, 0] == 0 and abs(bias[0]) < 100
    assert np.allclose(np.asarray(h(xc, training=False)).reshape(-1), np.asarray(fit_logistic(x, t, 0.01)[0](x)).reshape(-1),
                       atol=1e-5)


def test_kfold_lbfgs_heads_are_deterministic(rec, lite0_run, tmp_path):
    """--head=lbfgs on the cached features: two runs write the same fold heads (full batch, no
    seed), out-of-fold figures as good as the Adam heads' here, one val loss per fold."""
    cfg0, _ = lite0_run
    runs = []
    for k in range(2):
        cfg = dataclasses.replace(cfg0, out=str(tmp_path / f"lb{k}"), head="lbfgs", l2=0.01)
        runs.append((crossfit.run(cfg), np.load(tmp_path / f"lb{k}" / "fold_heads.npz")))
    (r, h0), (_, h1) = runs
    assert all(np.array_equal(h0[k], h1[k]) for k in h0.files)
    assert r["oof_log_loss"] < 0.4 and all(len(f["val_loss_by_epoch"]) == 1 for f in r["per_fold"])
    assert r["config"]["head"] == "lbfgs"


def test_hedged_ensemble_of_a_member_with_its_size_in_the_name(rec, tmp_path):
    """A single backbone given as NAME@SIZE keeps its ImageNet masses, and the ensemble's hedge
    builds that backbone's classifier at that size (it once looked up 'NAME@SIZE' as a name)."""
    cfg = KFoldConfig(backbone="efficientnet_lite0@96", records=rec, out=str(tmp_path / "m"),
                      folds=["fold1", "fold2", "fold3"], epochs=2, batch_size=16, cache_dir=str(tmp_path / "cache"))
    crossfit.run(cfg)
    assert oof.read_oof(cfg.out).masses is not None
    report = ensembling.run_oof([cfg.out], str(tmp_path / "ens"), hedge="on")
    assert report["hedge"] is not None
    model = predictor.load_model(str(tmp_path / "ens" / "model.keras"))
    assert model.input_shape == (None, 96, 96, 3)


def test_gem_pooled_member_trains_and_rewrites_to_standard_layers(rec, tmp_path):
    """--pooling=gem: its own feature cache, no ImageNet masses (the classifier was trained on
    average-pooled features), GeM in the exported graph, and a plain-Keras twin that agrees."""
    cfg = KFoldConfig(backbone="efficientnet_lite0", image_size=128, pooling="gem", records=rec,
                      out=str(tmp_path / "gem"), folds=["fold1", "fold2", "fold3"], epochs=6, batch_size=16,
                      cache_dir=str(tmp_path / "cache"))
    r = crossfit.run(cfg)
    assert r["oof_log_loss"] < 0.4
    assert oof.read_oof(str(tmp_path / "gem")).masses is None
    assert {f.name.split("-")[0] for f in (tmp_path / "cache").glob("*.npz")} == {"efficientnet_lite0_128_gem"}
    model = predictor.load_model(str(tmp_path / "gem"))
    gems = [la for la in all_layers(model) if isinstance(la, GeneralizedMeanPooling2D)]
    assert len(gems) == 1 and gems[0].p == GEM_P
    ids, y, p = predictor.predict_records(model, rec, "fold0")
    assert metrics.log_loss(y, p) < 0.5
    _, _, p_plain = predictor.predict_records(serving.plain_keras(model), rec, "fold0")
    np.testing.assert_allclose(p_plain, p, atol=1e-5)
