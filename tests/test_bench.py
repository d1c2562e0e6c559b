"""catdog_tf.bench: the quick mode end to end (every row, positive numbers, JSON + Markdown
written; never a speed threshold), the measuring helpers, and the pipeline's shuffle order."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from catdog_tf import bench
from conftest import REPO


def test_summarize_medians_and_cpu_rate():
    samples = [{"n": 100, "wall": 1.0, "cpu": 2.0, "others": 0.5},
               {"n": 100, "wall": 2.0, "cpu": 2.0, "others": 0.0},
               {"n": 100, "wall": 0.5, "cpu": 1.0, "others": None}]
    s = bench.summarize(samples)
    assert s["images_per_s"] == 100  # median of 100, 50, 200
    assert s["runs"] == [100, 50, 200]
    assert s["cpu_images_per_s"] == 50  # median of 50, 50, 100
    assert s["cores_used"] == 2.0  # median of 2, 1, 2
    assert s["others_cores"] == pytest.approx(0.25)  # runs without /proc/stat are left out
    with pytest.raises(ValueError):
        bench.summarize([])


def test_measure_discards_warmup():
    calls = []

    def run_once():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)  # a slow warm-up must not count
        return 10

    s = bench.measure(run_once, warmup=1, repeats=3)
    assert len(calls) == 4 and len(s["runs"]) == 3
    assert min(s["runs"]) > 10 / 0.2


def test_clock_chunks_leave_out_warmup_batches():
    clock = bench.Clock([np.zeros((4, 1))] * 8, count=len)
    for _ in clock:
        pass
    assert len(clock.marks) == 9 and clock.sizes == [4] * 8
    s = clock.summary(warmup=1, chunk=3)
    assert len(s["runs"]) == 2 and s["images_per_run"] == 12


def test_pick_is_balanced_and_stable(tmp_path):
    for i in range(5):
        (tmp_path / f"cat.{i}.jpg").write_bytes(b"x")
        (tmp_path / f"dog.{i}.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    got = [p.name for p in bench.pick(tmp_path, 4)]
    assert got == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"]


def test_quick_plan_covers_every_section():
    s = bench.Settings.small()
    prep = {"work": "/w", "native": {"records": "r", "records_ms": {96: "rm"}, "classes": "c", "flat": "f",
                                     "zip": "z"},
            "k200": {"records": "k", "classes": "kc"}}
    rows = bench.plan(prep, s)
    assert {r.section for r in rows} == set(bench.SECTIONS)
    assert len({r.id for r in rows}) == len(rows)
    assert {r.kind for r in rows} == set(bench.KINDS)
    assert bench.Settings.from_dict(json.loads(json.dumps(bench.dataclasses.asdict(s)))) == s


def test_cached_training_dataset_reshuffles_every_epoch(kaggle_dir, tmp_path):
    """The shuffle sits before decoding, or after the cache when caching: either way every
    epoch holds every example once, in a new order."""
    from catdog_tf import pipeline, records

    rec = str(tmp_path / "rec")
    records.build([str(kaggle_dir)], records.BuildConfig(out=rec, val_fraction=0.25, min_shards=4, workers=2))
    n = sum(1 for _ in records.read_examples(rec, "train"))
    for cache in (False, True):
        ds = pipeline.make_dataset(rec, "train", 16, n, training=True, seed=3, cache=cache, repeat=True,
                                   with_ids=True)
        it = iter(ds)
        epochs = [[i.decode() for i in next(it)[0]["id"].numpy()] for _ in range(3)]
        assert all(sorted(e) == sorted(epochs[0]) and len(set(e)) == n for e in epochs)
        assert len({tuple(e) for e in epochs}) > 1, f"cache={cache}: every epoch in the same order"


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "catdog_tf.bench", "--quick", f"--out_json={out_json}",
                           f"--out_md={out_md}", f"--work_dir={tmp_path / 'work'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    rows = data["rows"]
    s = bench.Settings.from_dict(data["settings"])
    expected = bench.plan(data["prep"], s)
    assert [r["name"] for r in rows if r["section"] == "pipeline"][:1]  # rows came back
    assert sorted(f"{r['section']}/{r['table']}/{r['name']}" for r in rows) == sorted(r.id for r in expected)
    for r in rows:
        res = r["result"]
        assert "error" not in res, (r["name"], res.get("error"))
        for key in ("images_per_s", "cpu_images_per_s", "cores_used", "rss_peak_mb", "rss_base_mb"):
            assert res[key] > 0, (r["name"], key, res[key])
        assert res["runs"] and all(x > 0 for x in res["runs"]), r["name"]
        if r["kind"] == "head_cached":
            assert res["extract_images_per_s"] > 0
        if r["kind"] in ("pair", "train_pair"):
            ratios = res["paired"].get("ratios") or {"real": {"x_first": res["paired"]["ratio"]}}
            assert all(v["x_first"] > 0 for v in ratios.values())
    # progress lines while running, one per row
    assert proc.stderr.count("img/s (runs") == len(rows)
    text = out_md.read_text()
    for head in ("## 1. Input pipeline", "## 2. Training step", "## 3. Inference", "## 4. Records build",
                 "## 5. Scaling", "H100", "TF_ENABLE_ONEDNN_OPTS"):
        assert head in text
    assert "## Failed rows" not in text
    assert data["machine"]["tensorflow"] and data["machine"]["cores"] >= 1
    print(f"quick benchmark: {len(rows)} rows in {elapsed:.0f}s")
