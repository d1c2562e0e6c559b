import csv
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catdog_tf.config import OutliersConfig
from catdog_tf.data import manifest, shards
from catdog_tf.tools import outlier_screen
from conftest import KAGGLE200, REPO, require
from catdog_tf.config import BuildConfig


ANIMALS = ["cat.2", "cat.7", "cat.14", "dog.1", "dog.6", "dog.11"]


def _jpeg(im):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("screen")
    for i in ANIMALS:
        (d / f"{i}.jpg").symlink_to(require(KAGGLE200 / "train" / f"{i}.jpg"))
    # non-animals with cat/dog names: flat colors and rendered text
    (d / "cat.90001.jpg").write_bytes(_jpeg(Image.new("RGB", (200, 200), (40, 90, 200))))
    (d / "dog.90002.jpg").write_bytes(_jpeg(Image.new("RGB", (200, 200), (250, 250, 250))))
    im = Image.new("RGB", (200, 200), "white")
    draw = ImageDraw.Draw(im)
    for row in range(8):
        draw.text((10, 10 + 22 * row), "ADOPTED! call 555-0199", fill="black")
    (d / "cat.90003.jpg").write_bytes(_jpeg(im))
    return d


def test_screen_flags_non_animals_only(folder, tmp_path):
    out = tmp_path / "out"
    s = outlier_screen.run(OutliersConfig(images=str(folder), out=str(out), top_n=5, backbone="efficientnet_lite0"))
    assert s["screened"] == 9
    assert set(s["ids"]) == {"cat.90001", "dog.90002", "cat.90003"}
    rows = list(csv.DictReader(open(out / "candidates.csv")))
    assert list(rows[0].keys())[:5] == ["id", "label", "score", "top1", "p1"]
    assert [r["id"] for r in rows] == s["ids"]  # ranked by score, surest non-animal first
    assert [float(r["score"]) for r in rows] == sorted(float(r["score"]) for r in rows)
    assert [i for sheet in s["contact_sheets"] for i in sheet["ids"]] == s["ids"]
    assert (out / s["contact_sheets"][0]["file"]).stat().st_size > 10_000
    assert "contact_sheet-01.png" in (out / "index.html").read_text()
    assert set(s["no_animal_by_top_n"]) == {"1", "3", "5", "10", "30", "100"}
    # fewer classes looked at -> at least as many candidates
    counts = [s["no_animal_by_top_n"][k] for k in ("1", "3", "5", "10", "30", "100")]
    assert counts == sorted(counts, reverse=True)


def test_exclusion_file_round_trips_into_records(folder, tmp_path):
    out = tmp_path / "out"
    s = outlier_screen.run(OutliersConfig(images=str(folder), out=str(out), top_n=5, backbone="efficientnet_lite0"))
    m = shards.build([str(folder)], BuildConfig(out=str(tmp_path / "rec"), exclude=str(out / "exclude.txt"),
                                                         workers=2))
    assert sorted(m["excluded"]) == sorted(s["ids"])
    stored = {e["id"] for e in manifest.read_examples(str(tmp_path / "rec"))}
    assert stored - set(m["excluded"]) == set(ANIMALS)  # stored for evaluation, listed to keep out of training


def test_label_conflict_is_flagged():
    probs = np.full((2, 1000), 1e-4)
    probs[0, 200] = 0.9   # a confident dog class...
    probs[1, 282] = 0.9   # ...and a confident cat
    s = outlier_screen.screen(probs / probs.sum(1, keepdims=True), np.array([0, 0]), top_n=30)
    assert s["label_conflict"].tolist() == [True, False]   # on a cat. file: conflict; a cat: fine
    assert not s["no_animal"].any()


def test_cli_flags(folder, tmp_path):
    r = subprocess.run([sys.executable, "-m", "catdog_tf.outliers", f"--images={folder}", f"--out={tmp_path / 'o'}",
                        "--top_n=5", "--backbone=efficientnet_lite0"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "candidates.csv").read_text().startswith("id,label,score,")
