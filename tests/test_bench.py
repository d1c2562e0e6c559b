"""catdog_tf.bench: the quick mode end to end (every row, positive numbers, bench.md + bench.json
written, the repository's BENCHMARKS.md untouched; never a speed threshold), the measuring
helpers, the marked blocks of BENCHMARKS.md, and the pipeline's shuffle order."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from catdog_tf import bench
from catdog_tf.bench import document, tables
from catdog_tf.bench.plan import LOADERS
from catdog_tf.bench.rows import KINDS
from catdog_tf.data import manifest, pipeline, shards
from catdog_tf.errors import UserError
from conftest import REPO
from catdog_tf.config import BuildConfig

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_bench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "catdog_tf.bench", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def repo_files() -> dict[str, bytes]:
    return {n: (REPO / n).read_bytes() for n in (document.DOC, document.DATA)}


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
    (tmp_path / "7.jpg").write_bytes(b"x")  # a test photo: no label
    got = [p.name for p in bench.pick(tmp_path, 4)]
    assert got == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"]


def test_quick_plan_covers_every_section():
    s = bench.Settings.small()
    prep = {"work": "/w", "native": {"records": "r", "records_ms": {96: "rm"}, "records_ss": {96: "rs"}, "classes": "c",
                                     "flat": "f", "zip": "z"},
            "k200": {"records": "k", "classes": "kc", "flat": "kf"}}
    rows = bench.plan(prep, s)
    assert {r.section for r in rows} == set(bench.SECTIONS)
    assert len({r.id for r in rows}) == len(rows)
    assert {r.kind for r in rows} == set(KINDS)
    assert {r.params["loader"] for r in rows if "loader" in r.params} == set(LOADERS)
    assert bench.Settings.from_dict(json.loads(json.dumps(dataclasses.asdict(s)))) == s


def test_sections_are_checked():
    assert bench.parse_sections(["scale", " pipeline"]) == ("pipeline", "scale")  # run order
    with pytest.raises(UserError, match="unknown section.*trian"):
        bench.parse_sections(["pipeline", "trian"])
    proc = run_bench("--sections=pipeline,trian")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --sections: unknown section(s) trian")
    assert "Traceback" not in proc.stderr


def test_update_refuses_quick_and_partial_runs():
    with pytest.raises(UserError, match="quick"):
        document.check_updatable(True, bench.SECTIONS)
    with pytest.raises(UserError, match="every section"):
        document.check_updatable(False, ("pipeline",))
    before = repo_files()
    proc = run_bench("--quick", "--update")  # refused before measuring anything
    assert proc.returncode == 2 and "error: --update" in proc.stderr
    assert repo_files() == before


def test_replace_blocks_keeps_the_prose():
    doc = ("# Title\n\nProse before, *kept*.\n\n<!-- bench:begin a -->\n\nold table a\n\n<!-- bench:end a -->\n"
           "Prose between.\n<!-- bench:begin b -->\nold b\n<!-- bench:end b -->\n\nProse after.\n")
    new = document.replace_blocks(doc, {"a": "| new | a |", "b": "new b\n"}, "doc")
    assert new == ("# Title\n\nProse before, *kept*.\n\n<!-- bench:begin a -->\n\n| new | a |\n\n<!-- bench:end a -->\n"
                   "Prose between.\n<!-- bench:begin b -->\n\nnew b\n\n<!-- bench:end b -->\n\nProse after.\n")
    assert document.replace_blocks(new, {"a": "| new | a |", "b": "new b"}, "doc") == new  # idempotent
    with pytest.raises(UserError, match="no markers for block.*c"):
        document.replace_blocks(doc, {"a": "x", "b": "y", "c": "z"}, "doc")
    with pytest.raises(UserError, match="makes no block.*b"):
        document.replace_blocks(doc, {"a": "x"}, "doc")
    with pytest.raises(UserError, match="no end marker"):
        document.replace_blocks("<!-- bench:begin a -->\nx\n", {"a": "x"}, "doc")
    with pytest.raises(UserError, match="doc:3: block b begins inside block a"):
        document.replace_blocks("<!-- bench:begin a -->\nx\n<!-- bench:begin b -->\n", {"a": "x"}, "doc")


def test_repo_benchmarks_render_to_themselves():
    """BENCHMARKS.md's blocks are exactly what its BENCHMARKS.json renders to, every table row
    has its header's number of cells, and the prose is outside the blocks."""
    data = document.load(str(REPO / document.DATA))
    text = (REPO / document.DOC).read_text()
    made = {b.name: b.text for b in tables.blocks(data)}
    assert document.replace_blocks(text, made, document.DOC) == text
    found = document.spans(text, document.DOC)
    assert set(found) == set(made)
    for name, body in made.items():
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("|---"):
                cells = lambda s: len(s.replace("\\|", "").strip("|").split("|"))  # noqa: E731
                width = cells(lines[i - 1])
                for row in lines[i + 1:]:
                    if not row.startswith("|"):
                        break
                    assert cells(row) == width, (name, row)
    outside, pos = "", 0
    for a, b in sorted(found.values()):
        outside, pos = outside + text[pos:a], b
    outside += text[pos:]
    gone = [r["name"] for r in data["rows"] if r["params"].get("loader") not in (None, *LOADERS)]
    for body in made.values():  # an earlier run's rows of loaders no longer measured are left out
        assert not any(f"| {n} |" in body for n in gone)
    for prose in ("**What drives memory.**", "**Targets.**", "Reading the ratios:", "On this CPU-only machine",
                  "MirroredStrategy with two logical devices", "Public figures used", "Reading it:",
                  "## Pipeline changes made with this benchmark"):
        assert prose in outside


def test_update_on_a_copy_replaces_a_block_and_keeps_the_prose(tmp_path):
    before = repo_files()
    for name, content in before.items():
        (tmp_path / name).write_bytes(content)
    doc = tmp_path / document.DOC
    text = doc.read_text()
    a, b = document.spans(text, "copy")["build"]
    stale = text[:a] + "\n| stale | table |\n\n" + text[b:]
    doc.write_text(stale)
    proc = run_bench(f"--render={tmp_path / document.DATA}", "--update", f"--benchmarks_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"updated {doc}" in proc.stdout
    assert doc.read_bytes() == before[document.DOC]  # the block again, every byte of prose kept
    assert (tmp_path / document.DATA).read_bytes() == before[document.DATA]  # same data: not rewritten
    assert repo_files() == before


def test_render_writes_to_a_new_temporary_folder():
    before = repo_files()
    proc = run_bench(f"--render={REPO / document.DATA}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.split("wrote ", 1)[1].split()[0])
    try:
        assert path.name == "bench.md" and REPO not in path.parents
        assert "<!-- bench:begin scale -->" in path.read_text()
    finally:
        shutil.rmtree(path.parent)
    assert repo_files() == before


def test_cached_training_dataset_reshuffles_every_epoch(kaggle_dir, tmp_path):
    """The shuffle sits before decoding, or after the cache when caching: either way every
    epoch holds every example once, in a new order."""
    rec = str(tmp_path / "rec")
    shards.build([str(kaggle_dir)], BuildConfig(out=rec, val_fraction=0.25, min_shards=4, workers=2))
    n = sum(1 for _ in manifest.read_examples(rec, "train"))
    for cache in (False, True):
        ds = pipeline.make_dataset(rec, "train", 16, n, pipeline.Read(training=True, seed=3, cache=cache, repeat=True,
                                                                      with_ids=True))
        it = iter(ds)
        epochs = [[i.decode() for i in next(it)[0]["id"].numpy()] for _ in range(3)]
        assert all(sorted(e) == sorted(epochs[0]) and len(set(e)) == n for e in epochs)
        assert len({tuple(e) for e in epochs}) > 1, f"cache={cache}: every epoch in the same order"


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path):
    out = tmp_path / "out"
    before = repo_files()
    t0 = time.time()
    proc = run_bench("--quick", f"--out={out}", f"--work_dir={tmp_path / 'work'}", timeout=600)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert repo_files() == before  # BENCHMARKS.md and .json: only --update writes them
    data = json.loads((out / "bench.json").read_text())
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
        if r["cpu_devices"] > 1:
            assert res["replicas"] == r["cpu_devices"]
    # progress lines while running, one per row
    assert proc.stderr.count("img/s (runs") == len(rows)
    text = (out / "bench.md").read_text()
    for head in ("## 1. Input pipeline", "## 2. Training step", "## 3. Inference", "## 4. Records build",
                 "## 5. Scaling", "H100", "TF_ENABLE_ONEDNN_OPTS", "quick mode"):
        assert head in text
    assert "## Failed rows" not in text
    assert set(document.spans(text, "bench.md")) == {b.name for b in tables.blocks(data)}
    assert data["machine"]["tensorflow"] and data["machine"]["cores"] >= 1
    print(f"quick benchmark: {len(rows)} rows in {elapsed:.0f}s")


def _res(rate, cpu=None):
    return {"images_per_s": rate, "cpu_images_per_s": cpu or rate, "runs": [rate], "cores_used": 1.0,
            "others_cores": 0.0, "rss_peak_mb": 700.0, "rss_base_mb": 600.0}


def test_pipeline_rows_get_fidelity_and_ratios_to_the_keras_loader():
    """Every pipeline row of a table carries its fidelity (from the table's fidelity row) and
    its ratios to decode alone and to image_dataset_from_directory; the headline shows ours
    against the Keras loader, paired, with the fidelity and the target. Rows and paired figures
    of a loader the plan no longer has (an earlier run's JSON) are left out of all of it."""
    s = bench.Settings.small()
    prep = {"work": "/w", "native": {"records": "r", "records_ms": {96: "rm"}, "records_ss": {96: "rs"}, "classes": "c",
                                     "flat": "f", "zip": "z"},
            "k200": {"records": "k", "classes": "kc", "flat": "kf"}}
    rows = [r for r in bench.plan(prep, s) if r.section == "pipeline" and r.table == "native 96"]
    fid_row = next(r for r in rows if r.kind == "fidelity")
    assert set(fid_row.params["specs"]) == {"ours", "ours --max_side=128", "ours --store_size=96", "area",
                                            "limit-noaa", "idg", "idfd"}
    assert fid_row.params["specs"]["ours --store_size=96"]["records"] == "rs"
    k200 = [r for r in bench.plan(prep, s) if r.section == "pipeline" and r.table == "k200 96"]
    assert set(next(r for r in k200 if r.kind == "fidelity").params["specs"]) == {"ours", "idg", "idfd"}
    assert {r.params["loader"] for r in k200 if r.kind == "pipe"} == {"decode", "limit", "ours-train", "ours-eval",
                                                                       "idg", "idfd"}
    rates = {"decode": 2000.0, "limit": 1500.0, "ours-train": 1200.0, "ours-eval": 1300.0, "idfd": 1000.0,
             "idg": 100.0, "limit-noaa": 1400.0, "area": 1350.0, "old": 600.0}
    stale = bench.Row("pipeline", "native 96", "before this change: decode_resize with antialias=True, in memory",
                      "pipe", dict(loader="old", variant="", fidelity_key="old"))
    results = []
    for r in rows + [stale]:
        d = {"section": r.section, "table": r.table, "name": r.name, "kind": r.kind, "params": dict(r.params)}
        if r.kind == "pair" and not r.params["variant"]:  # an earlier run paired "old" too
            d["params"]["loaders"] = r.params["loaders"] + ["old"]
        if r.kind == "pipe":
            d["result"] = _res(rates[r.params["loader"]] * (2 if r.params.get("variant") else 1))
        elif r.kind == "pair":
            loaders = d["params"]["loaders"]
            versus = {a: {b: {"ratio": rates[a] / rates[b], "runs": [1.0], "cpu": rates[a] / rates[b]}
                          for b in loaders if b != a} for a in loaders}
            d["result"] = {**_res(1.0), "paired": {"per_loader": {k: _res(rates[k]) for k in loaders},
                                                   "ratios": {}, "base": "idfd", "versus": versus}}
        else:
            d["result"] = {**_res(50.0), "fidelity": {"ours": 1.25, "ours --max_side=128": 1.7, "old": 1.1, "area": 0.9,
                                                      "limit-noaa": 2.2, "idg": 3.0, "idfd": 2.2,
                                                      "ours --store_size=96": 1.1}}
        results.append(d)
    ratios = tables.compute_ratios(results, s)["pipeline"]
    assert {v["loader"] for v in ratios.values()} <= set(LOADERS) and len(ratios) == sum(r.kind == "pipe" for r in rows)
    ours = ratios["native 96 | ours, training=True"]
    assert ours["fidelity"] == 1.25 and ours["x_idfd"] == pytest.approx(1.2) and ours["x_decode"] == pytest.approx(0.6)
    assert ours["x_idfd_paired"] == pytest.approx(1.2) and ours["x_decode_paired"] == pytest.approx(0.6)
    assert not any("old" in k for v in ratios.values() for k in v)
    assert ratios["native 96 | decode_resize, in memory"]["x_idfd_paired"] == pytest.approx(1.5)
    assert ratios["native 96 | ours, training=True --max_side=128"]["fidelity"] == 1.7
    assert ratios["native 96 | ours, training=True --store_size=96"]["fidelity"] == 1.1
    assert ratios["native 96 | keras.utils.image_dataset_from_directory"]["fidelity"] == 2.2
    assert ratios["native 96 | decode alone at the chosen DCT scale, in memory"]["fidelity"] is None
    head = tables._headline_pipeline({"pipeline": ratios})
    assert ("| native 96 \\| ours, training=True: x image_dataset_from_directory | 1.20x | 1.20x | 1.20x | 1.25 "
            "| >= 1.0x, fidelity <= 1.5 |") in head
    assert "before this change" not in head
    table = tables._pipeline_table(tables.current(results), {"pipeline": ratios}, "native 96")
    line = next(x for x in table.splitlines() if x.startswith("| ours, training=True |"))
    assert "| 1.25 | 0.60x (0.60x CPU) | 1.20x (1.20x CPU) | 12.00x |" in line
    assert "before this change" not in table
    paired = next(x for x in table.splitlines() if x.startswith("Paired ("))
    assert "limit 1500 img/s" in paired and "limit / idfd 1.50x" in paired and "old" not in paired
