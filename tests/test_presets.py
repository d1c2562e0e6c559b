"""Recipes are data: every shipped preset is valid, a bad one is refused in one line, and the
seed's recipe (three Keras backbones, two stages each, then the fitted ensemble) runs end to end
through scripts/reproduce.sh (offline: --weights=none, tiny photos)."""

import json
import os
import subprocess
import sys

import pytest

from catdog_tf import presets
from catdog_tf.errors import UserError
from conftest import KAGGLE200, REPO, require


@pytest.mark.parametrize("name", presets.names())
def test_shipped_presets_are_valid(name):
    p = presets.load(name)
    assert p.members and p.tool in presets.TOOLS and p.description
    shell = subprocess.run(["bash", "-c", p.shell() + '\necho "$PRESET_KIND|$PRESET_TOOL|$PRESET_MEMBERS|$PRESET_FLAGS"'],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shell == f"{p.kind}|{p.tool}|{' '.join(p.members)}|{' '.join(p.flag_args())}"


@pytest.mark.parametrize("name", presets.names())
def test_preset_members_are_registry_backbones(name):
    from catdog_tf.models import registry

    for m in presets.load(name).members:
        for part in m.split("+"):
            registry.get(part.partition("@")[0])


def test_the_two_recipes_the_issue_names():
    assert presets.load("cpu").tool == "kfold"
    assert presets.load("seed").members == ("xception", "inception_v3", "resnet50")
    student = presets.load("student")
    assert student.kind == "student" and student.tool == "train" and len(student.members) == 1


@pytest.mark.parametrize("text, needle", [
    ('tool = "kfold"\nmembers = ["efficientnet_lite0"]\n[flags]\nepoch = 3\n', "epoch: not a flag of catdog_tf.kfold"),
    ('tool = "kfold"\nmembers = ["efficientnet_lite0"]\n[flags]\nlr = -1\n', "--lr=-1"),
    ('tool = "predict"\nmembers = ["x"]\n', "tool must be one of"),
    ('tool = "train"\nmembers = []\n', "no members"),
    ('tool = "train\nmembers', "not valid TOML"),
    ('kind = "teacher"\ntool = "train"\nmembers = ["x"]\n', "kind must be one of"),
    ('kind = "student"\ntool = "kfold"\nmembers = ["efficientnet_lite0"]\n', "a student is one member"),
    ('kind = "student"\ntool = "train"\nmembers = ["efficientnet_lite0", "efficientnet_lite1"]\n', "a student is one"),
])
def test_bad_presets_are_refused(tmp_path, monkeypatch, text, needle):
    (tmp_path / "bad.toml").write_text(text)
    monkeypatch.setattr(presets, "HERE", tmp_path)
    with pytest.raises(UserError, match=needle):
        presets.load("bad")


def test_unknown_preset_is_one_line():
    r = subprocess.run([sys.executable, "-m", "catdog_tf.presets", "--shell", "nope"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: no preset 'nope'; presets: cpu, seed, student"


def test_seed_recipe_end_to_end(tmp_path):
    """reproduce.sh PRESET=seed on 60 labeled and 6 test photos: both stages of each member,
    the ensemble fitted on fold9, held-out evaluation, a full submission and the exports."""
    data = _kaggle(tmp_path)
    runs = tmp_path / "runs"
    r = _reproduce(data, {"PRESET": "seed", "RUNS": str(runs), "NATIVE": str(tmp_path / "none"),
                          "FLAGS": "--weights=none --image_size=96 --epochs1=1 --epochs2=1 --batch_size=8 "
                                   "--stage2_cache=on"})
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for m in ("xception", "inception_v3", "resnet50"):
        flags = json.loads((runs / "train" / m / "flags.json").read_text())
        assert "history2" in json.loads((runs / "train" / m / "metrics.json").read_text())  # stage 2 ran
        assert json.dumps(flags).count("fold9") >= 1
    ens = json.loads((runs / "final" / "ensemble.json").read_text())
    assert ens["split"] == "fold9" and len(ens["weights"]) == 3
    held = json.loads((runs / "final" / "heldout.json").read_text())
    assert held["count"] > 0
    rows = (runs / "final" / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,label" and sorted(int(x.split(",")[0]) for x in rows[1:]) == list(range(1, 7))
    assert (runs / "export" / "export.json").is_file()


def _kaggle(tmp_path, n=30):
    require(KAGGLE200 / "train")
    data = tmp_path / "kaggle"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    for i in range(5001, 5001 + n):
        for c in ("cat", "dog"):
            (data / "train" / f"{c}.{i}.jpg").symlink_to(KAGGLE200 / "train" / f"{c}.{i}.jpg")
    for i in range(1, 7):
        (data / "test" / f"{i}.jpg").symlink_to(KAGGLE200 / "test" / f"{i}.jpg")
    return data


def _reproduce(data, env):
    return subprocess.run(["bash", "scripts/reproduce.sh", str(data)], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=1500)


@pytest.mark.parametrize("env, needle", [
    ({"PRESET": "student"}, "PRESET=student is a student preset"),
    ({"PRESET": "seed", "STUDENT": "student"}, "needs a student preset and a k-fold PRESET"),
    ({"STUDENT": "cpu"}, "needs a student preset"),
    ({"STUDENT": "nope"}, "no preset 'nope'"),
])
def test_reproduce_refuses_a_wrong_student_before_any_work(tmp_path, env, needle):
    r = _reproduce(tmp_path / "absent", {"RUNS": str(tmp_path / "runs"), **env})
    assert r.returncode == 2 and needle in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_cpu_recipe_with_its_student_end_to_end(tmp_path):
    """reproduce.sh on 60 labeled and 6 test photos with one k-fold member and STUDENT=student:
    the student learns the ensemble's out-of-fold and test predictions, is evaluated on the
    held-out folds and exported; a rerun with other student flags redoes its figures."""
    from catdog_tf.data import oof

    data = _kaggle(tmp_path)
    runs = tmp_path / "runs"
    env = {"RUNS": str(runs), "NATIVE": str(tmp_path / "none"), "MEMBERS": "efficientnet_lite0@96",
           "FLAGS": "--epochs=2", "STUDENT": "student",
           "STUDENT_FLAGS": "--image_size=96 --epochs1=1 --epochs2=1 --batch_size=8 --unfreeze_blocks=2"}
    r = _reproduce(data, env)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    flags = json.loads((runs / "student" / "flags.json").read_text())["config"]
    assert flags["soft_targets"] == [str(runs / "final" / "oof_predictions.csv"), str(runs / "final" / "submission.csv")]
    assert flags["train_split"].endswith("+test") and "fold0" not in flags["train_split"]
    assert "fold1+" not in flags["train_split"] and flags["val_split"] == "none"
    assert flags["unfreeze_blocks"] == 2 and flags["schedule"] == "cosine"  # STUDENT_FLAGS after the preset's
    teacher = oof.read_oof(str(runs / "final"))
    assert set(teacher.folds) == {f"fold{k}" for k in range(2, 10)}
    held = json.loads((runs / "student" / "heldout.json").read_text())
    assert held["count"] == json.loads((runs / "final" / "heldout.json").read_text())["count"] > 0
    assert (runs / "export_student" / "export.json").is_file()
    assert not (runs / "export_first_member").exists()  # the student is the phone model
    before = (runs / "student" / "heldout.json").stat().st_mtime_ns
    r = _reproduce(data, {**env, "STUDENT_FLAGS": env["STUDENT_FLAGS"] + " --lr2=3e-4"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (runs / "student" / "heldout.json").stat().st_mtime_ns != before  # the new student's own figure
