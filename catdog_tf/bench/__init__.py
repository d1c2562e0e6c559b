"""Throughput of every stage, side by side in one run: `python -m catdog_tf.bench`.

    python -m catdog_tf.bench                 # full run (~15-20 min): BENCHMARKS.md + BENCHMARKS.json
    python -m catdog_tf.bench --quick         # every row on a tiny subset, < 2 min (the test runs this)
    python -m catdog_tf.bench --sections=pipeline,build

Every row runs in a fresh subprocess (so one row's memory and thread pools never pollute the
next) and reports images/s as the median of several timed runs after a warm-up, the spread
of the runs, the process's CPU time (images per CPU-second is far less sensitive to other
jobs on a shared machine than wall-clock images/s), how many cores other processes were
using meanwhile (from /proc/stat), and the row's peak RSS (ru_maxrss) next to the RSS right
after importing TensorFlow. Compare rows as ratios within one run, never across runs.

Sections (one table each in BENCHMARKS.md):
  pipeline  shards -> decoded, resized, batched float images, no model: ours (records +
            pipeline.make_dataset, training and eval), the reference's ImageDataGenerator,
            keras.utils.image_dataset_from_directory, and the limit (decode + resize alone
            over in-memory bytes); kaggle_native and kaggle200, 224 and 299, +/- --max_side.
  train     a training step fed by the real pipeline vs in-memory synthetic batches, stage 1
            and stage 2; the cached-feature head stage vs the full frozen-backbone stage;
            TF_ENABLE_ONEDNN_OPTS=0 vs the default.
  infer     feature extraction and prediction per offline backbone, and an ensemble.
  build     records.build from a folder, a zip, and with --max_side.
  scale     MirroredStrategy over 1 vs 2 logical CPU devices; the pipeline on 1 vs 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SECTIONS = ("pipeline", "train", "infer", "build", "scale")
LABELED = re.compile(r"^(cat|dog)\.(\d+)\.jpe?g$", re.IGNORECASE)

# Public figures used for the GPU estimate (estimates, not measurements of ours):
# NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/efficientnet_v1/README.md
# (tensorflow:21.09-tf2-py3): EfficientNet-B0 (390M MACs, 224 px) on 1x A100-80GB.
A100_B0_TRAIN_AMP = 3454.0  # img/s, training, mixed precision, 1 GPU
A100_B0_INFER_FP16 = 9729.85  # img/s, inference, FP16, batch 1024
B0_MACS = 390e6
# Lambda Labs, "NVIDIA H100 Tensor Core GPU - Deep Learning Performance Analysis": vision
# models train ~2x faster on an H100 SXM than on an A100 SXM.
H100_OVER_A100_VISION = 2.0
# MACs of EfficientNet-Lite (tensorflow/tpu models/official/efficientnet/lite README).
LITE_MACS = {"efficientnet_lite0": 407e6, "efficientnet_lite1": 631e6, "efficientnet_lite2": 899e6}
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ plan


@dataclasses.dataclass
class Row:
    """One measurement. `kind` picks the child function, `params` are its plain arguments."""

    section: str
    table: str  # rows with the same table key are printed (and compared) together
    name: str
    kind: str
    params: dict
    env: dict = dataclasses.field(default_factory=dict)  # extra environment of the child
    cpus: str | None = None  # taskset -c CPUS
    cpu_devices: int = 0  # >1: split the CPU into this many logical devices before TF starts

    @property
    def id(self) -> str:
        return f"{self.section}/{self.table}/{self.name}"

    def group_key(self) -> str:
        return json.dumps([sorted(self.env.items()), self.cpus, self.cpu_devices])


@dataclasses.dataclass
class Settings:
    """Sizes of the run. small(): every row on a tiny subset (--quick); full(): the real figures."""

    quick: bool
    n_images: int  # photos per data set (half cats, half dogs)
    sizes: tuple[int, ...]
    max_side: dict  # image size -> --max_side of the records compared at that size
    batch: int
    pipe_images: int  # images per timed pipeline run
    idg_images: int  # images per timed ImageDataGenerator run (it is ~10x slower)
    pipe_repeats: int
    train_size: int
    train_batch: int
    train_steps: int  # steps per timed epoch
    train_repeats: int
    infer_chunk: int  # batches per timed inference run
    infer_repeats: int
    infer_batch: int
    backbones: tuple[tuple[str, int], ...]  # (name, image size) of the inference rows
    weights: str | None  # None: random weights (speed does not depend on the values)
    head_rows: int  # cached-feature rows per head epoch
    build_repeats: int
    pair_rounds: int
    warmup: int = 1

    @staticmethod
    def from_dict(d: dict) -> "Settings":
        d = dict(d)
        d["sizes"] = tuple(d["sizes"])
        d["max_side"] = {int(k): v for k, v in d["max_side"].items()}
        d["backbones"] = tuple(tuple(b) for b in d["backbones"])
        return Settings(**d)

    @staticmethod
    def full() -> "Settings":
        return Settings(quick=False, n_images=1000, sizes=(224, 299), max_side={224: 320, 299: 400}, batch=32,
                        pipe_images=640, idg_images=160, pipe_repeats=3, train_size=224, train_batch=32,
                        train_steps=6, train_repeats=3, infer_chunk=4, infer_repeats=3, infer_batch=32,
                        backbones=tuple(LITE_SIZES.items()), weights="auto", head_rows=32768, build_repeats=3,
                        pair_rounds=3)

    @staticmethod
    def small() -> "Settings":
        return Settings(quick=True, n_images=32, sizes=(96,), max_side={96: 128}, batch=16, pipe_images=32,
                        idg_images=32, pipe_repeats=2, train_size=64, train_batch=8, train_steps=1,
                        train_repeats=1, infer_chunk=2, infer_repeats=2, infer_batch=8,
                        backbones=(("efficientnet_lite0", 64), ("efficientnet_lite1", 80)), weights=None,
                        head_rows=2048, build_repeats=2, pair_rounds=2)


def plan(prep: dict, s: Settings, sections=SECTIONS) -> list[Row]:
    """Rows in run order. `prep` is what prepare() made (folders, records, zip)."""
    rows: list[Row] = []
    b = s.batch
    if "pipeline" in sections:
        for ds in ("native", "k200"):
            d = prep[ds]
            for size in s.sizes:
                table = f"{ds} {size}"
                steps = max(1, s.pipe_images // b)
                common = dict(size=size, batch=b, steps=steps, repeats=s.pipe_repeats, warmup=s.warmup)
                variants = [("", d["records"])]
                ms = s.max_side[size]
                if ds == "native":  # kaggle200 photos are 200 px: --max_side >= 200 stores the same bytes
                    variants.append((f" --max_side={ms}", _by_size(d["records_ms"], size)))
                for suffix, rec in variants:
                    v = dict(common, records=rec, variant=suffix.strip())
                    rows.append(Row("pipeline", table, f"limit: decode+resize in memory{suffix}", "pipe",
                                    dict(v, loader="limit")))
                    rows.append(Row("pipeline", table, f"ours, training=True{suffix}", "pipe",
                                    dict(v, loader="ours-train")))
                    rows.append(Row("pipeline", table, f"ours, training=False{suffix}", "pipe",
                                    dict(v, loader="ours-eval")))
                    if not suffix:
                        rows.append(Row("pipeline", table, "before the change: shuffle after decoding", "pipe",
                                        dict(v, loader="ours-train-old")))
                    if ds == "k200":  # 200 px < 448: never DCT-scaled, so this is the old decode_resize
                        rows.append(Row("pipeline", table, "before the change: limit, antialiased upscaling", "pipe",
                                        dict(v, loader="limit-plain")))
                    rows.append(Row("pipeline", table, f"paired: limit / ours train / ours eval{suffix}", "pair",
                                    dict(v, loaders=["limit", "ours-train", "ours-eval"], rounds=s.pair_rounds)))
                if ds == "native":
                    rows.append(Row("pipeline", table, "limit, full decode + plain bilinear (not antialiased)",
                                    "pipe", dict(common, loader="limit-noaa", records=d["records"])))
                rows.append(Row("pipeline", table, "ImageDataGenerator.flow_from_directory", "pipe",
                                dict(common, loader="idg", classes=d["classes"],
                                     steps=max(1, s.idg_images // b), repeats=min(3, s.pipe_repeats))))
                rows.append(Row("pipeline", table, "keras.utils.image_dataset_from_directory", "pipe",
                                dict(common, loader="idfd", classes=d["classes"])))
    k200 = prep["k200"]["records"]
    lite0 = "efficientnet_lite0"
    tr = dict(backbone=lite0, weights=s.weights, size=s.train_size, batch=s.train_batch, steps=s.train_steps,
              repeats=s.train_repeats, warmup=s.warmup, records=k200)
    if "train" in sections:
        for feed in ("real", "synthetic"):
            rows.append(Row("train", "step", f"stage 1, {feed} input", "train", dict(tr, stage=1, feed=feed)))
        for stage in (1, 2):
            rows.append(Row("train", "step", f"stage {stage}, paired: real / synthetic", "train_pair",
                            dict(tr, stage=stage)))
        rows.append(Row("train", "step", "stage 1 head on cached pooled features", "head_cached",
                        dict(tr, head_rows=s.head_rows, chunk=s.infer_chunk, infer_repeats=s.infer_repeats)))
        rows.append(Row("train", "onednn", "stage 1, synthetic, TF_ENABLE_ONEDNN_OPTS=0", "train",
                        dict(tr, stage=1, feed="synthetic"), env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
        rows.append(Row("train", "onednn", "stage 1, synthetic, TF_ENABLE_ONEDNN_OPTS=1", "train",
                        dict(tr, stage=1, feed="synthetic"), env={"TF_ENABLE_ONEDNN_OPTS": "1"}))
    if "infer" in sections:
        inf = dict(weights=s.weights, batch=s.infer_batch, chunk=s.infer_chunk, repeats=s.infer_repeats,
                   warmup=s.warmup, records=k200)
        for name, size in s.backbones:
            rows.append(Row("infer", "models", f"{name} {size}: features", "infer", dict(inf, what="features",
                                                                                      members=[[name, size]])))
            rows.append(Row("infer", "models", f"{name} {size}: predict", "infer", dict(inf, what="predict",
                                                                                     members=[[name, size]])))
        rows.append(Row("infer", "models", "ensemble of " + " + ".join(n.replace("efficientnet_", "") for n, _ in
                                                                     s.backbones) + ": predict", "infer",
                        dict(inf, what="ensemble", members=[list(m) for m in s.backbones])))
        name, size = s.backbones[0]
        rows.append(Row("infer", "onednn", f"{name} {size}: predict, TF_ENABLE_ONEDNN_OPTS=0", "infer",
                        dict(inf, what="predict", members=[[name, size]]), env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
    if "build" in sections:
        d = prep["native"]
        bb = dict(repeats=s.build_repeats, warmup=s.warmup, work=prep["work"])
        rows.append(Row("build", "build", "folder -> shards", "build", dict(bb, source=d["flat"])))
        rows.append(Row("build", "build", "zip -> shards", "build", dict(bb, source=d["zip"])))
        ms = s.max_side[s.sizes[0]]
        rows.append(Row("build", "build", f"folder -> shards, --max_side={ms}", "build",
                        dict(bb, source=d["flat"], max_side=ms)))
    if "scale" in sections:
        for n in (1, 2):
            rows.append(Row("scale", "mirrored", f"MirroredStrategy, {n} logical CPU device(s)", "train",
                            dict(tr, stage=1, feed="synthetic", strategy="mirrored"), cpu_devices=n if n > 1 else 0))
        size = s.sizes[0]
        d = prep["native"]
        steps = max(1, s.pipe_images // b)
        common = dict(size=size, batch=b, steps=steps, repeats=s.pipe_repeats, warmup=s.warmup)
        ms = s.max_side[size]
        for cpus in ("0", "0,1"):
            n = len(cpus.split(","))
            for suffix, rec in (("", d["records"]), (f" --max_side={ms}", _by_size(d["records_ms"], size))):
                rows.append(Row("scale", f"native {size} cores", f"limit{suffix}, {n} core(s)", "pipe",
                                dict(common, loader="limit", records=rec), cpus=cpus))
            rows.append(Row("scale", f"native {size} cores", f"ours, training=True, {n} core(s)", "pipe",
                            dict(common, loader="ours-train", records=d["records"]), cpus=cpus))
    return rows


def _by_size(d: dict, size: int):
    """d[size], also after a JSON round trip turned the keys into strings."""
    return d[size] if size in d else d[str(size)]


# ============================================================================ preparing data


def pick(folder: Path, n: int) -> list[Path]:
    """n labeled photos of a Kaggle train folder, half cats and half dogs, lowest ids first."""
    by = {"cat": [], "dog": []}
    for p in folder.iterdir():
        m = LABELED.match(p.name)
        if m:
            by[m.group(1).lower()].append((int(m.group(2)), p))
    out = []
    for label in ("cat", "dog"):
        out += [p for _, p in sorted(by[label])[: n // 2]]
    return out


def _synthetic_photos(folder: Path, n: int, native: bool, seed: int = 0) -> list[Path]:
    """Stand-in JPEGs when the shared photos are missing: smooth random images."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (int(rng.integers(200, 375)), int(rng.integers(250, 500))) if native else (200, 200)
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        p = folder / f"{'cat' if i % 2 == 0 else 'dog'}.{i // 2}.jpg"
        im.save(p, "JPEG", quality=90)
        out.append(p)
    return out


def prepare(work: Path, native_dir: Path | None, k200_dir: Path | None, s: Settings) -> dict:
    """Symlink folders (flat Kaggle layout for records, cats/ dogs/ for the Keras loaders),
    records with and without --max_side, and a zip. Nothing is copied from the shared photos."""
    from catdog_tf import records

    prep: dict = {"work": str(work), "sources": {}}
    for ds, src in (("native", native_dir), ("k200", k200_dir)):
        base = work / ds
        if src is not None and Path(src).is_dir():
            photos = pick(Path(src), s.n_images)
            prep["sources"][ds] = str(src)
        else:
            photos = _synthetic_photos(base / "synthetic", s.n_images, native=ds == "native")
            prep["sources"][ds] = f"synthetic ({src} missing)"
            log(f"{ds}: {src} not found; using {len(photos)} synthetic JPEGs")
        flat, classes = base / "flat", base / "classes"
        for d in (flat, classes / "cats", classes / "dogs"):
            d.mkdir(parents=True, exist_ok=True)
        for p in photos:
            for link in (flat / p.name, classes / ("cats" if p.name.lower().startswith("cat") else "dogs") / p.name):
                if not link.exists():
                    link.symlink_to(p.resolve())
        d = {"flat": str(flat), "classes": str(classes), "count": len(photos),
             "bytes": sum(p.stat().st_size for p in photos)}
        cfg = dict(val_fraction=0.0, workers=0)
        log(f"{ds}: building records of {len(photos)} photos")
        m = records.build([str(flat)], records.BuildConfig(out=str(base / "records"), **cfg))
        d["records"] = str(base / "records")
        d["records_bytes"] = sum(sh["bytes"] for sh in m["splits"]["train"]["shards"])
        d["records_ms"], d["records_ms_bytes"], d["records_ms_converted"] = {}, {}, {}
        if ds == "native":
            for size in s.sizes:
                ms = s.max_side[size]
                out = base / f"records_ms{ms}"
                m = records.build([str(flat)], records.BuildConfig(out=str(out), max_side=ms, **cfg))
                d["records_ms"][size] = str(out)
                d["records_ms_bytes"][size] = sum(sh["bytes"] for sh in m["splits"]["train"]["shards"])
                d["records_ms_converted"][size] = len(m["converted"])
            z = base / "photos.zip"
            if not z.exists():
                with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in photos:
                        zf.write(p, f"train/{p.name}")
            d["zip"] = str(z)
        prep[ds] = d
    return prep


# ============================================================================ measuring (child side)


def _busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _snap() -> tuple[float, float, float | None]:
    return time.perf_counter(), time.process_time(), _busy_seconds()


def _sample(n: int, a, b) -> dict:
    wall, cpu = b[0] - a[0], b[1] - a[1]
    busy = None if a[2] is None or b[2] is None else b[2] - a[2]
    return {"n": n, "wall": wall, "cpu": cpu, "others": None if busy is None else max(0.0, busy - cpu)}


def summarize(samples: list[dict]) -> dict:
    """Median images/s over timed runs, plus CPU-normalized rate, cores used and others' load."""
    if not samples:
        raise ValueError("no timed runs")
    rates = [x["n"] / x["wall"] for x in samples]
    out = {
        "images_per_s": statistics.median(rates),
        "runs": [round(r, 2) for r in rates],
        "images_per_run": samples[0]["n"],
        "cpu_images_per_s": statistics.median(x["n"] / max(x["cpu"], 1e-9) for x in samples),
        "cores_used": statistics.median(x["cpu"] / x["wall"] for x in samples),
    }
    others = [x["others"] / x["wall"] for x in samples if x.get("others") is not None]
    out["others_cores"] = statistics.median(others) if others else None
    return out


def measure(run_once, warmup: int, repeats: int) -> dict:
    """run_once() -> images processed; warm-up runs are discarded."""
    for _ in range(warmup):
        run_once()
    samples = []
    for _ in range(repeats):
        a = _snap()
        n = run_once()
        samples.append(_sample(n, a, _snap()))
    return summarize(samples)


class Clock:
    """Wraps an iterable of batches and notes the time each batch is handed out, so a library
    function that loops over batches itself (features.extract, predict.predict_batches) can
    be timed per chunk of batches, leaving out the first batches (tracing, warm-up)."""

    def __init__(self, iterable, count=len):
        self.iterable, self.count = iterable, count
        self.marks: list = []
        self.sizes: list[int] = []

    def __iter__(self):
        for item in self.iterable:
            self.marks.append(_snap())
            self.sizes.append(int(self.count(item)))
            yield item
        self.marks.append(_snap())

    def summary(self, warmup: int, chunk: int) -> dict:
        samples = []
        i = warmup
        while i + chunk < len(self.marks):
            samples.append(_sample(sum(self.sizes[i:i + chunk]), self.marks[i], self.marks[i + chunk]))
            i += chunk
        return summarize(samples)


def _image_data_generator():
    """The reference's loader. keras.preprocessing.image.ImageDataGenerator is gone from
    Keras 3's public API (3.15 keeps only load_img & co. there); use tf_keras's (the Keras 2
    code, pip install tf_keras) when installed, else the copy Keras 3 still ships privately."""
    try:
        from tf_keras.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "tf_keras.preprocessing.image.ImageDataGenerator"
    except ImportError:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "keras.src.legacy.preprocessing.image.ImageDataGenerator"


def _pipe_dataset(loader: str, size: int, batch: int, records: str | None = None, classes: str | None = None):
    """(iterable of batches, extra info) of one input pipeline, no model."""
    import tensorflow as tf

    from catdog_tf import pipeline
    from catdog_tf import records as rec_mod

    AUTOTUNE = tf.data.AUTOTUNE
    extra = {}
    if loader in ("ours-train", "ours-eval"):
        ds = pipeline.make_dataset(records, "train", size, batch, training=loader == "ours-train", seed=0,
                                   repeat=True)
    elif loader == "ours-train-old":
        ds = _shuffle_after_decode(records, size, batch)
    elif loader.startswith("limit"):
        ex = list(rec_mod.read_examples(records, "train"))
        enc = tf.constant([e["encoded"] for e in ex])
        hw = tf.constant([[e["height"], e["width"]] for e in ex], tf.int64)
        extra["in_memory_mb"] = round(sum(len(e["encoded"]) for e in ex) / 1e6, 1)
        if loader == "limit":  # exactly ours' per-image work
            fn = lambda e, s: pipeline.decode_resize(e, s[0], s[1], size)  # noqa: E731
        elif loader == "limit-plain":  # full-size decode, then the antialiased resize
            fn = lambda e, s: tf.image.resize(tf.io.decode_jpeg(e, channels=3), [size, size],  # noqa: E731
                                              antialias=True)
        elif loader == "limit-noaa":  # full-size decode, plain (aliasing) bilinear resize
            fn = lambda e, s: tf.image.resize(tf.io.decode_jpeg(e, channels=3), [size, size])  # noqa: E731
        else:
            raise ValueError(f"unknown loader {loader!r}")
        ds = tf.data.Dataset.from_tensor_slices((enc, hw)).repeat()
        ds = ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=False)
        ds = ds.batch(batch, num_parallel_calls=AUTOTUNE, deterministic=False).prefetch(AUTOTUNE)
    elif loader == "idg":
        IDG, extra["implementation"] = _image_data_generator()
        gen = IDG(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                  zoom_range=0.2, horizontal_flip=True)
        ds = gen.flow_from_directory(classes, target_size=(size, size), batch_size=batch, class_mode="binary",
                                     seed=0)
    elif loader == "idfd":
        import keras

        ds = keras.utils.image_dataset_from_directory(classes, label_mode="binary", image_size=(size, size),
                                                      batch_size=batch, shuffle=True, seed=0, verbose=False)
        ds = ds.repeat()
    else:
        raise ValueError(f"unknown loader {loader!r}")
    return ds, extra


def _batches(it, steps: int) -> int:
    n = 0
    for _ in range(steps):
        b = next(it)
        x = b[0] if isinstance(b, tuple) else b
        n += int(x.shape[0])
    return n


def row_pipe(loader: str, size: int, batch: int, steps: int, repeats: int, warmup: int,
             records: str | None = None, classes: str | None = None, variant: str = "") -> dict:
    """One input pipeline, no model: images/s of batches of float images."""
    ds, extra = _pipe_dataset(loader, size, batch, records, classes)
    t0 = time.perf_counter()
    it = iter(ds)
    next(it)
    extra["first_batch_s"] = round(time.perf_counter() - t0, 3)
    return {**measure(lambda: _batches(it, steps), warmup, repeats), **extra}


def row_pair(loaders: list[str], size: int, batch: int, steps: int, rounds: int, warmup: int, records: str,
             repeats: int = 0, variant: str = "") -> dict:
    """Several pipelines in ONE process, timed in alternating rounds (A B C, C B A, ...), so
    that other jobs' load hits all of them alike: the noise-robust wall-clock ratios. Only one
    pipeline is alive at a time (a fresh iterator per turn, warmed up with a few untimed
    batches), so no pipeline prefetches for free, or steals CPU, while another is timed.
    Top-level figures are those of loaders[1]; `paired` has every loader and the median
    per-round ratio of each to loaders[0]."""
    import gc

    datasets = {name: _pipe_dataset(name, size, batch, records)[0] for name in loaders}
    samples: dict = {name: [] for name in loaders}
    for r in range(warmup + rounds):
        for name in (loaders if r % 2 == 0 else loaders[::-1]):
            it = iter(datasets[name])
            _batches(it, 3)  # fills the pipeline (and, first time, traces it); not timed
            a = _snap()
            n = _batches(it, steps)
            b = _snap()
            del it
            gc.collect()  # the iterator's background threads stop with it
            if r >= warmup:
                samples[name].append(_sample(n, a, b))
    per = {name: summarize(v) for name, v in samples.items()}
    base = samples[loaders[0]]
    ratios = {}
    for name in loaders[1:]:
        rs = [(x["n"] / x["wall"]) / (b["n"] / b["wall"]) for x, b in zip(samples[name], base)]
        cs = [(x["n"] / x["cpu"]) / (b["n"] / b["cpu"]) for x, b in zip(samples[name], base)]
        ratios[name] = {"x_first": statistics.median(rs), "x_first_runs": [round(v, 3) for v in rs],
                        "x_first_cpu": statistics.median(cs)}
    return {**per[loaders[1]], "paired": {"per_loader": per, "ratios": ratios, "base": loaders[0]}}


def _shuffle_after_decode(records: str, size: int, batch: int, shuffle_buffer: int = 2048):
    """make_dataset(training=True, repeat=True) as it was before this benchmark: the shuffle
    buffer after the decoding map, so it held decoded float images."""
    import tensorflow as tf

    from catdog_tf import pipeline
    from catdog_tf import records as rec_mod

    AUTOTUNE = tf.data.AUTOTUNE
    files = rec_mod.shard_files(records, "train")
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), num_parallel_calls=AUTOTUNE,
                       deterministic=False)
    ds = ds.map(lambda s: pipeline.parse(s, size), num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.shuffle(shuffle_buffer, seed=0, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch, num_parallel_calls=AUTOTUNE, deterministic=False).map(lambda d: (d["image"], d["label"]))
    options = tf.data.Options()
    options.deterministic = False
    return ds.with_options(options).prefetch(AUTOTUNE)


class _EpochClock:
    """A Keras callback noting each epoch's time (built lazily: keras imports late).
    skip_first_batch: time from the end of the epoch's first batch (images_per_epoch then
    excludes it), so a fresh iterator's start-up is not counted; its time goes to `startup`."""

    def __new__(cls, images_per_epoch: int, skip_first_batch: bool = False):
        import keras

        class EpochClock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.samples, self.startup = [], []

            def on_epoch_begin(self, epoch, logs=None):
                self._a = _snap()

            def on_train_batch_end(self, batch, logs=None):
                if skip_first_batch and batch == 0:
                    now = _snap()
                    self.startup.append(now[0] - self._a[0])
                    self._a = now

            def on_epoch_end(self, epoch, logs=None):
                self.samples.append(_sample(images_per_epoch, self._a, _snap()))

        return EpochClock()


def _synthetic(size: int, batch: int):
    import tensorflow as tf

    x = tf.random.stateless_uniform([batch, size, size, 3], seed=[1, 2], minval=0, maxval=255)
    y = tf.cast(tf.random.stateless_uniform([batch], seed=[3, 4]) > 0.5, tf.float32)
    # In memory; .batch() (rather than from_tensors) lets tf.distribute split the global batch.
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True).prefetch(2)


def _compile(model, lr: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])


def row_train(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int, records: str,
              stage: int, feed: str, strategy: str = "default") -> dict:
    """Epochs of model.fit (steps_per_epoch=steps) on the full classifier; stage 1: backbone
    frozen, stage 2: top 2 blocks trainable (backbones.set_trainable_top_blocks)."""
    import keras

    from catdog_tf import backbones, distribute, pipeline
    from catdog_tf.model import ModelConfig, build_classifier

    keras.utils.set_random_seed(0)
    strat, why = distribute.choose_strategy(strategy)
    with strat.scope():
        clf = build_classifier(ModelConfig(backbone, weights, size, seed=0))
        if stage == 2:
            backbones.set_trainable_top_blocks(clf.backbone, backbone, 2)
        _compile(clf.model, 1e-3 if stage == 1 else 1e-5)
    if feed == "real":
        ds = pipeline.make_dataset(records, "train", size, batch, training=True, seed=0, repeat=True)
    else:
        ds = _synthetic(size, batch)
    clock = _EpochClock(steps * batch)
    clf.model.fit(ds, epochs=warmup + repeats, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    trainable = sum(int(w.numpy().size) for w in clf.model.trainable_weights)
    return {**summarize(clock.samples[warmup:]), "replicas": strat.num_replicas_in_sync,
            "trainable_weights": trainable, "strategy": type(strat).__name__}


def row_train_pair(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int,
                   records: str, stage: int) -> dict:
    """row_train with both feeds in ONE process: one-epoch fits alternating real, synthetic,
    synthetic, real, ... on the same model, so other jobs' load hits both alike. Top-level
    figures are the real feed's; `paired` has both and the per-round ratio real / synthetic.
    Each fit() starts a new iterator (filling the shuffle buffer, the first decodes), which a
    real epoch (185 steps on the training split) pays once but a 6-step timing epoch would
    count ~30 times over: `steps` steps after a first batch are timed, and the first batch's
    time of each feed is reported apart (`startup_s`)."""
    import keras

    from catdog_tf import backbones, pipeline
    from catdog_tf.model import ModelConfig, build_classifier

    keras.utils.set_random_seed(0)
    clf = build_classifier(ModelConfig(backbone, weights, size, seed=0))
    if stage == 2:
        backbones.set_trainable_top_blocks(clf.backbone, backbone, 2)
    _compile(clf.model, 1e-3 if stage == 1 else 1e-5)
    feeds = {"real": pipeline.make_dataset(records, "train", size, batch, training=True, seed=0, repeat=True),
             "synthetic": _synthetic(size, batch)}
    samples: dict = {k: [] for k in feeds}
    startup: dict = {k: [] for k in feeds}
    for r in range(warmup + repeats):
        for name in (("real", "synthetic") if r % 2 == 0 else ("synthetic", "real")):
            clock = _EpochClock(steps * batch, skip_first_batch=True)
            clf.model.fit(feeds[name], epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[clock])
            if r >= warmup:
                samples[name] += clock.samples
                startup[name] += clock.startup
    per = {k: {**summarize(v), "startup_s": statistics.median(startup[k])} for k, v in samples.items()}
    rs = [(a["n"] / a["wall"]) / (b["n"] / b["wall"]) for a, b in zip(samples["real"], samples["synthetic"])]
    cs = [(a["n"] / a["cpu"]) / (b["n"] / b["cpu"]) for a, b in zip(samples["real"], samples["synthetic"])]
    return {**per["real"], "paired": {"per_feed": per, "ratio": statistics.median(rs),
                                      "ratio_runs": [round(x, 3) for x in rs], "ratio_cpu": statistics.median(cs)}}


def row_head_cached(backbone: str, weights, size: int, batch: int, steps: int, repeats: int, warmup: int,
                    records: str, head_rows: int, chunk: int, infer_repeats: int) -> dict:
    """The CPU fast path of stage 1: features.extract of pooled features once, then head
    epochs on the cached arrays. images_per_s is the head epoch rate."""
    import keras
    import numpy as np

    from catdog_tf import features, pipeline
    from catdog_tf.model import ModelConfig, build_classifier

    keras.utils.set_random_seed(0)
    clf = build_classifier(ModelConfig(backbone, weights, size, augmentation="none", seed=0))
    pooled = keras.Model(clf.backbone.input, clf.pooling(clf.backbone.output), name="pooled")
    n_batches = warmup + chunk * infer_repeats + 1
    ds = pipeline.make_dataset(records, "train", size, batch, with_ids=True, repeat=True).take(n_batches)
    clock = Clock(ds, count=lambda b: b[1].shape[0])
    feats, labels, _ = features.extract(pooled, clock)
    extract = clock.summary(warmup, chunk)
    reps = -(-head_rows // len(feats))
    x = np.tile(feats, (reps, 1))[:head_rows]
    y = np.tile(labels, reps)[:head_rows]
    _compile(clf.head, 1e-3)
    ec = _EpochClock(len(x))
    clf.head.fit(x, y, batch_size=batch, epochs=warmup + repeats, shuffle=True, verbose=0, callbacks=[ec])
    return {**summarize(ec.samples[warmup:]), "extract_images_per_s": extract["images_per_s"],
            "extract_runs": extract["runs"], "extract_cpu_images_per_s": extract["cpu_images_per_s"],
            "feature_dim": int(feats.shape[1])}


def row_infer(what: str, members: list, weights, batch: int, chunk: int, repeats: int, warmup: int,
              records: str) -> dict:
    """features: features.extract of the pooled backbone; predict: predict.predict_batches of
    the exported-style inference model; ensemble: the same for ensemble.build_ensemble."""
    import keras

    from catdog_tf import ensemble, features, pipeline, predict
    from catdog_tf.model import ModelConfig, build_classifier

    keras.utils.set_random_seed(0)
    clfs = [build_classifier(ModelConfig(name, weights, size, augmentation="none", seed=0)) for name, size in members]
    size = max(c.image_size for c in clfs)
    n_batches = warmup + chunk * repeats + 1
    ds = pipeline.make_dataset(records, "train", size, batch, with_ids=True, repeat=True).take(n_batches)
    if what == "features":
        clf = clfs[0]
        pooled = keras.Model(clf.backbone.input, clf.pooling(clf.backbone.output), name="pooled")
        clock = Clock(ds, count=lambda b: b[1].shape[0])
        features.extract(pooled, clock)
    else:
        model = clfs[0].inference_model() if what == "predict" else ensemble.build_ensemble(
            [c.inference_model() for c in clfs], [1.0] * len(clfs))
        clock = Clock(ds.map(lambda x, y: x["image"]), count=lambda b: b.shape[0])
        predict.predict_batches(model, clock)
    return clock.summary(warmup, chunk)


def row_build(source: str, repeats: int, warmup: int, work: str, max_side: int | None = None) -> dict:
    """records.build of a folder or zip into a fresh folder each run (no shard reuse)."""
    from catdog_tf import records

    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=work))
    runs = [0]

    def run_once():
        runs[0] += 1
        out = tmp / f"run{runs[0]}"
        m = records.build([source], records.BuildConfig(out=str(out), val_fraction=0.1, max_side=max_side))
        shutil.rmtree(out)
        return m["written"]

    try:
        return measure(run_once, warmup, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


KINDS = {"pipe": row_pipe, "pair": row_pair, "train": row_train, "train_pair": row_train_pair, "head_cached": row_head_cached, "infer": row_infer,
         "build": row_build}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run_rows_here(rows: list[dict], cpu_devices: int = 0) -> list[dict]:
    """Child side: runs rows (dicts of Row fields) one after the other in this process."""
    import tensorflow as tf

    if cpu_devices > 1:  # must happen before TF initializes its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    import keras  # noqa: F401 - part of the baseline, not of the row

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # noqa: BLE001 - private API; informational only
        onednn = None
    out = []
    for r in rows:
        base = _rss_mb()
        t0 = time.time()
        try:
            res = KINDS[r["kind"]](**r["params"])
        except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
            import traceback

            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"[:500]}
        res.update(rss_base_mb=round(base, 1), rss_peak_mb=round(_rss_mb(), 1), row_seconds=round(time.time() - t0, 1),
                   onednn=onednn, affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
        out.append({**r, "result": res})
    return out


# ============================================================================ running (parent side)


def run_group(rows: list[Row], logs: Path, timeout: float) -> list[dict]:
    """Runs rows in ONE fresh subprocess (their env/taskset/devices must agree)."""
    logs.mkdir(parents=True, exist_ok=True)
    r0 = rows[0]
    fd, spec = tempfile.mkstemp(suffix=".json", prefix="rows-", dir=logs)
    os.close(fd)
    Path(spec).write_text(json.dumps([dataclasses.asdict(r) for r in rows]))
    out = spec.replace("rows-", "out-")
    cmd = [sys.executable, "-m", "catdog_tf.bench", f"--child_rows={spec}", f"--child_out={out}",
           f"--child_cpu_devices={r0.cpu_devices}"]
    if r0.cpus:
        cmd = ["taskset", "-c", r0.cpus] + cmd
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **r0.env}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    log_path = Path(spec.replace("rows-", "log-").replace(".json", ".txt"))
    with open(log_path, "w") as lf:
        try:
            proc = subprocess.run(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout, cwd=str(REPO))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc == 0 and Path(out).exists():
        return json.loads(Path(out).read_text())
    tail = log_path.read_text()[-1500:]
    return [{**dataclasses.asdict(r), "result": {"error": f"child exited {rc}; log {log_path}: ...{tail}"}}
            for r in rows]


def run_all(rows: list[Row], logs: Path, one_per_process: bool, timeout: float = 900) -> list[dict]:
    """One subprocess per row (full mode), or one per distinct subprocess setup (environment,
    taskset, logical devices) in quick mode, where process start-up would dominate."""
    if one_per_process:
        groups = [[r] for r in rows]
    else:
        by_key: dict[str, list[Row]] = {}
        for r in rows:
            by_key.setdefault(r.group_key(), []).append(r)
        groups = list(by_key.values())
    results = []
    done = 0
    for g in groups:
        for res in run_group(g, logs, timeout * len(g)):
            done += 1
            results.append(res)
            log(f"({done}/{len(rows)}) {res['section']} | {res['table']} | {res['name']}: {_short(res['result'])}")
    return results


def _short(r: dict) -> str:
    if "error" in r:
        return "FAILED " + r["error"].splitlines()[0][:200]
    runs = r.get("runs") or [0]
    s = (f"{r['images_per_s']:.1f} img/s (runs {min(runs):.0f}-{max(runs):.0f}), "
         f"{r['cpu_images_per_s']:.1f} img/CPU-s, {r['cores_used']:.2f} cores")
    if r.get("others_cores") is not None:
        s += f", others {r['others_cores']:.2f} cores"
    return s + f", peak RSS {r['rss_peak_mb']:.0f} MB"


# ============================================================================ report


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gb": mem, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform(),
            "loadavg_at_start": list(os.getloadavg()), "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS",
                                                                                               "unset")}


def _find(results, section, table=None, name=None, startswith=None):
    for r in results:
        if r["section"] != section or (table is not None and r["table"] != table):
            continue
        if (name is not None and r["name"] == name) or (startswith is not None and r["name"].startswith(startswith)):
            return r["result"] if "error" not in r["result"] else None
    return None


def _ratio(a, b, key="images_per_s"):
    if not a or not b or not b.get(key):
        return None
    return a[key] / b[key]


def compute_ratios(results: list[dict], s: Settings) -> dict:
    """The headline ratios (wall-clock images/s and, in brackets, images per CPU-second)."""
    out: dict = {"pipeline": {}, "train": {}, "infer": {}, "scale": {}}
    for r in results:
        if r["section"] != "pipeline" or r["params"].get("loader") not in ("ours-train", "ours-eval",
                                                                           "ours-train-old"):
            continue
        variant = r["params"].get("variant", "")
        lim = next((x["result"] for x in results if x["section"] == "pipeline" and x["table"] == r["table"]
                    and x["params"].get("loader") == "limit" and x["params"].get("variant", "") == variant
                    and "error" not in x["result"]), None)
        idg = _find(results, "pipeline", r["table"], startswith="ImageDataGenerator")
        idfd = _find(results, "pipeline", r["table"], startswith="keras.utils.image_dataset")
        res = r["result"] if "error" not in r["result"] else None
        pair = next((x["result"]["paired"] for x in results if x["section"] == "pipeline" and x["table"] == r["table"]
                     and x["kind"] == "pair" and x["params"].get("variant", "") == variant
                     and "error" not in x["result"]), None)
        pr = pair["ratios"].get(r["params"]["loader"]) if pair else None
        out["pipeline"][f"{r['table']} | {r['name']}"] = {
            "x_limit_paired": pr["x_first"] if pr else None, "x_limit_paired_cpu": pr["x_first_cpu"] if pr else None,
            "x_limit": _ratio(res, lim), "x_limit_cpu": _ratio(res, lim, "cpu_images_per_s"),
            "x_idg": _ratio(res, idg), "x_idg_cpu": _ratio(res, idg, "cpu_images_per_s"),
            "x_idfd": _ratio(res, idfd), "x_idfd_cpu": _ratio(res, idfd, "cpu_images_per_s"),
        }
    for stage in (1, 2):
        pair = _find(results, "train", "step", name=f"stage {stage}, paired: real / synthetic")
        out["train"][f"stage {stage} real/synthetic, paired"] = pair["paired"]["ratio"] if pair else None
        out["train"][f"stage {stage} real/synthetic, paired (CPU)"] = pair["paired"]["ratio_cpu"] if pair else None
    real = _find(results, "train", "step", name="stage 1, real input")
    syn = _find(results, "train", "step", name="stage 1, synthetic input")
    out["train"]["stage 1 real/synthetic, isolated rows"] = _ratio(real, syn)
    out["train"]["stage 1 real/synthetic, isolated rows (CPU)"] = _ratio(real, syn, "cpu_images_per_s")
    head = _find(results, "train", "step", startswith="stage 1 head on cached")
    full = _find(results, "train", "step", name="stage 1, real input")
    if head and full:
        out["train"]["cached head epoch / full frozen-backbone epoch"] = head["images_per_s"] / full["images_per_s"]
        # train.py's stage 1: extract train + flipped train once, then E epochs over 2N rows,
        # vs E epochs of N images through the frozen backbone (with in-model augmentation).
        e = 10
        t_cached = 2 / head["extract_images_per_s"] + e * 2 / head["images_per_s"]
        t_full = e / full["images_per_s"]
        out["train"][f"stage 1 end to end, {e} epochs (cached incl. extraction with flips)"] = t_full / t_cached
    syn1 = _find(results, "train", "step", name="stage 1, synthetic input")
    pipe = _find(results, "pipeline", f"k200 {s.train_size}", name="ours, training=True") if not s.quick else \
        _find(results, "pipeline", f"k200 {s.sizes[0]}", name="ours, training=True")
    if syn1 and pipe:
        # The pipeline's CPU time per image comes out of the model's cores on a CPU-only box.
        c_step, c_pipe = 1 / syn1["cpu_images_per_s"], 1 / pipe["cpu_images_per_s"]
        out["train"]["stage 1 predicted real/synthetic from CPU cost"] = c_step / (c_step + c_pipe)
    for env in ("0", "1"):
        a = _find(results, "train", "onednn", name=f"stage 1, synthetic, TF_ENABLE_ONEDNN_OPTS={env}")
        out["train"][f"oneDNN={env} / default, stage 1 synthetic"] = _ratio(a, syn1)
    name, size = s.backbones[0]
    a = _find(results, "infer", "onednn", startswith=f"{name} {size}: predict, TF_ENABLE_ONEDNN_OPTS=0")
    b = _find(results, "infer", "models", name=f"{name} {size}: predict")
    out["infer"][f"oneDNN=0 / default, {name} predict"] = _ratio(a, b)
    m1 = _find(results, "scale", "mirrored", startswith="MirroredStrategy, 1")
    m2 = _find(results, "scale", "mirrored", startswith="MirroredStrategy, 2")
    out["scale"]["mirrored 2 devices / 1 device"] = _ratio(m2, m1)
    size = s.sizes[0]
    t = f"native {size} cores"
    ms = s.max_side[size]
    for label, stem in (("limit", "limit"), (f"limit --max_side={ms}", f"limit --max_side={ms}"),
                        ("ours train", "ours, training=True")):
        one = _find(results, "scale", t, name=f"{stem}, 1 core(s)")
        two = _find(results, "scale", t, name=f"{stem}, 2 core(s)")
        out["scale"][f"{label}: 2 cores / 1 core"] = _ratio(two, one)
    return out


def gpu_estimate(results: list[dict], s: Settings) -> dict:
    """Images/s an H100 would need per backbone (estimates from public figures) and the CPU
    cores of JPEG decoding that takes, from the measured 1-core decode+resize rate."""
    size = s.sizes[0]
    ms = s.max_side[size]
    t = f"native {size} cores"
    per_core = {"native photos": _find(results, "scale", t, name="limit, 1 core(s)"),
                f"native --max_side={ms}": _find(results, "scale", t, name=f"limit --max_side={ms}, 1 core(s)")}
    per_core["kaggle200 (200 px)"] = None
    k1 = _find(results, "pipeline", f"k200 {size}", name="limit: decode+resize in memory")
    n2 = _find(results, "pipeline", f"native {size}", name="limit: decode+resize in memory")
    if k1 and n2 and per_core["native photos"]:
        # 1-core kaggle200 rate scaled from the 2-core ratio kaggle200 / native (same run).
        per_core["kaggle200 (200 px)"] = {"images_per_s": per_core["native photos"]["images_per_s"]
                                          * k1["images_per_s"] / n2["images_per_s"], "derived": True}
    out = {"per_core_decode": {k: (v["images_per_s"] if v else None) for k, v in per_core.items()}, "backbones": {}}
    for name, macs in LITE_MACS.items():
        train = A100_B0_TRAIN_AMP * H100_OVER_A100_VISION * B0_MACS / macs
        infer = A100_B0_INFER_FP16 * H100_OVER_A100_VISION * B0_MACS / macs
        cores = {k: {"train": train / v, "infer": infer / v} for k, v in out["per_core_decode"].items() if v}
        out["backbones"][name] = {"size": LITE_SIZES[name], "h100_train_est": train, "h100_infer_est": infer,
                                  "cores": cores}
    return out


def _f(v, digits=1, suffix=""):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{suffix}"


def _x(v):
    return "n/a" if v is None else f"{v:.2f}x"


def _table_rows(results, section, table, extra_cols=None):
    lines = []
    for r in results:
        if r["section"] != section or r["table"] != table or r["kind"] in ("pair", "train_pair"):
            continue
        res = r["result"]
        if "error" in res:
            lines.append(f"| {r['name']} | failed: {res['error'].splitlines()[0][:120]} |")
            continue
        runs = res.get("runs") or []
        cols = [r["name"], _f(res["images_per_s"]), f"{min(runs):.0f}-{max(runs):.0f}" if runs else "",
                _f(res["cpu_images_per_s"]), _f(res["cores_used"], 2), _f(res.get("others_cores"), 2),
                _f(res["rss_peak_mb"], 0), _f(res["rss_peak_mb"] - res["rss_base_mb"], 0)]
        if extra_cols:
            cols += extra_cols(r)
        lines.append("| " + " | ".join(cols) + " |")
    return lines


HEAD = ("| row | img/s (median) | runs | img/CPU-s | cores used | others' cores | peak RSS MB | "
        "RSS over import MB |")
SEP = "|---|---:|---:|---:|---:|---:|---:|---:|"


def write_markdown(path: Path, data: dict):
    s = Settings.from_dict(data["settings"])
    res, ratios, meta = data["rows"], data["ratios"], data["machine"]
    L: list[str] = []
    L.append("# Benchmarks")
    L.append("")
    L.append(f"Made by `{data['command']}` on {data['date']} in {data['total_minutes']:.1f} min "
             f"({'quick mode: tiny subset, figures not meaningful' if s.quick else 'full mode'}).")
    L.append("")
    L.append(f"Machine: {meta['cores']} cores ({meta['cpu_model']}), {meta['memory_gb']} GB RAM, "
             f"Python {meta['python']}, TensorFlow {meta['tensorflow']} (tensorflow-cpu), Keras {meta['keras']}, "
             f"TF_ENABLE_ONEDNN_OPTS {meta['TF_ENABLE_ONEDNN_OPTS']} (oneDNN "
             f"{'on' if _onednn_default(res) else 'off'} by default in this build); load average at start "
             f"{', '.join(f'{x:.2f}' for x in meta['loadavg_at_start'])}. The {meta['cores']} cores are shared with other "
             "people's jobs: the *others' cores* column is how many cores other processes used during the "
             "timed runs (from /proc/stat), and *img/CPU-s* (images per CPU-second of the row's own process) is "
             "the noise-robust figure. Compare rows as ratios within this run.")
    L.append("")
    L.append(f"Data: `{data['prep']['sources'].get('native')}` ({data['prep']['native']['count']} photos, "
             f"half cats, half dogs, up to 500 px) and `{data['prep']['sources'].get('k200')}` "
             f"(the first {data['prep']['k200']['count']} photos, 200x200), linked (not copied) into a temporary "
             "folder; records built with `val_fraction=0`. Each row: a fresh subprocess, "
             f"{s.warmup} warm-up run, then the median of the timed runs (pipelines {s.pipe_repeats} runs of "
             f"{s.pipe_images} images, ImageDataGenerator {min(3, s.pipe_repeats)} runs of {s.idg_images}; "
             f"training {s.train_repeats} epochs of {s.train_steps} steps of {s.train_batch}; inference "
             f"{s.infer_repeats} runs of {s.infer_chunk} batches of {s.infer_batch}). *RSS over import* is the "
             "row's peak RSS minus the RSS right after importing TensorFlow and Keras (~560 MB by itself).")
    L.append("")
    # ---------------------------------------------------------------- headline
    L.append("## Headline ratios")
    L.append("")
    L.append("Pipeline vs limit: *paired* = both timed in one process in alternating rounds (the fair wall-clock "
             "comparison on a shared machine); *isolated* = the rows' own subprocesses, which other jobs hit "
             "unevenly.")
    L.append("")
    L.append("| ratio | wall clock, paired | wall clock, isolated rows | per CPU-second, isolated | target |")
    L.append("|---|---:|---:|---:|---|")
    for key, v in ratios["pipeline"].items():
        if "before the change" in key:
            continue
        L.append(f"| {key}: x limit | {_x(v['x_limit_paired'])} | {_x(v['x_limit'])} | {_x(v['x_limit_cpu'])} "
                 "| >= 0.9x |")
    for key, v in ratios["pipeline"].items():
        if "training=True" in key and "max_side" not in key:
            L.append(f"| {key}: x ImageDataGenerator | | {_x(v['x_idg'])} | {_x(v['x_idg_cpu'])} | >= 3x |")
    L.append("")
    L.append("| ratio | wall clock | per CPU-second | target |")
    L.append("|---|---:|---:|---|")
    tr = ratios["train"]
    for st in (1, 2):
        L.append(f"| training step, stage {st}: real pipeline / synthetic (paired) | "
                 f"{_x(tr.get(f'stage {st} real/synthetic, paired'))} "
                 f"| {_x(tr.get(f'stage {st} real/synthetic, paired (CPU)'))} | >= 0.95x |")
    for key in ("cached head epoch / full frozen-backbone epoch",
                "stage 1 end to end, 10 epochs (cached incl. extraction with flips)"):
        L.append(f"| {key} | {_x(tr.get(key))} | | |")
    L.append("")
    # ---------------------------------------------------------------- 1 pipeline
    L.append("## 1. Input pipeline: shards -> batched float images (no model)")
    L.append("")
    L.append("Batch %d, float32 0..255. *limit* = `pipeline.decode_resize` (the same per-image work as ours: "
             "DCT-scaled JPEG decode, then a bilinear resize, antialiased when a side shrinks) mapped with AUTOTUNE "
             "parallelism over the records' JPEG bytes held in memory, non-deterministic: what decoding alone "
             "costs. *ours* = `pipeline.make_dataset(..., repeat=True)` "
             "on the shards (training=True shuffles; False keeps the manifest order). "
             "ImageDataGenerator has the reference's arguments (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, "
             "horizontal flip) and reads the same photos through a folder of cats/ dogs/ symlinks; "
             "`image_dataset_from_directory` reads the same folder (its resize is plain bilinear, not "
             "antialiased; no augmentation)." % s.batch)
    L.append("")
    impl = next((r["result"].get("implementation") for r in res if r["params"].get("loader") == "idg"
                 and "implementation" in r["result"]), None)
    L.append(f"ImageDataGenerator: `keras.preprocessing.image.ImageDataGenerator` no longer exists in Keras "
             f"{meta['keras']} (the module keeps only `load_img`, `img_to_array`, `array_to_img`, `save_img`, "
             f"`smart_resize`). Measured: `{impl}` — "
             + ("the Keras 2 code from pip package tf_keras." if impl and impl.startswith("tf_keras") else
                "the Keras 2 code that Keras 3 still ships privately. `tf_keras` 2.21 (pip) has the public "
                "class; its per-image code (random_transform, apply_affine_transform, DirectoryIterator) was "
                "compared with this copy and differs only in docstrings, error messages and export names, so "
                "the figures hold for it. It is a single Python thread: PIL decode, nearest-neighbour resize, "
                "then a scipy affine warp per image."))
    L.append("")
    tables = []
    for r in res:
        if r["section"] == "pipeline" and r["table"] not in tables:
            tables.append(r["table"])
    for t in tables:
        ds, size = t.split()
        label = "kaggle_native" if ds == "native" else "kaggle200"
        L.append(f"### {label}, {size}x{size}")
        L.append("")
        L.append(HEAD + " first batch s | x limit | x ImageDataGenerator |")
        L.append(SEP + "---:|---:|---:|")

        def extra(r, t=t):
            v = ratios["pipeline"].get(f"{t} | {r['name']}")
            first = _f(r["result"].get("first_batch_s"), 2)
            if not v:
                return [first, "", ""]
            return [first, f"{_x(v['x_limit'])} ({_x(v['x_limit_cpu'])} CPU)", f"{_x(v['x_idg'])}"]

        L += _table_rows(res, "pipeline", t, extra)
        L.append("")
        for r in res:
            if r["section"] == "pipeline" and r["table"] == t and r["kind"] == "pair" and "error" not in r["result"]:
                pp = r["result"]["paired"]
                per, rr = pp["per_loader"], pp["ratios"]
                L.append(f"Paired{' ' + r['params']['variant'] if r['params'].get('variant') else ''} (one process, "
                         f"{len(per[pp['base']]['runs'])} alternating rounds): "
                         + ", ".join(f"{k} {v['images_per_s']:.0f} img/s" for k, v in per.items()) + "; "
                         + ", ".join(f"{k} / {pp['base']} {_x(v['x_first'])} (rounds "
                                     f"{', '.join(f'{x:.2f}' for x in v['x_first_runs'])})" for k, v in rr.items())
                         + ".")
                L.append("")
    p = data["prep"]
    L.append("**What `--max_side` buys.** Records of the %d native photos: %s MB as stored; " % (
        p["native"]["count"], _f(p["native"]["records_bytes"] / 1e6))
        + "; ".join(f"with `--max_side={s.max_side[z]}` {_f(p['native']['records_ms_bytes'][str(z)] / 1e6)} MB "
                    f"({p['native']['records_ms_converted'][str(z)]} photos re-encoded)" for z in s.sizes)
        + ". Decode+resize per CPU-second (the limit rows): " + _max_side_gain(res, s)
        + ". Decoding cost scales with the stored pixels; kaggle200 photos are 200 px already, so any `--max_side` >= 200 stores the very same "
          "bytes (nothing to measure there). The max_side values keep the short side of a 4:3 photo at or above "
          "the model size (no upsampling after squashing): 1.43x the image size at 224, 1.34x at 299.")
    L.append("")
    L.append(_memory_note(res, s))
    L.append("")
    L.append(_pipeline_findings(res, ratios, s))
    L.append("")
    # ---------------------------------------------------------------- 2 train
    L.append("## 2. Training step")
    L.append("")
    L.append(f"`model.build_classifier(ModelConfig('efficientnet_lite0'))` at {s.train_size}x{s.train_size}, batch "
             f"{s.train_batch}, weights `{s.weights}`, reference augmentation inside the model, Adam, `model.fit` "
             f"with steps_per_epoch={s.train_steps} (one warm-up epoch dropped). *real input* = "
             "`pipeline.make_dataset(kaggle200 records, training=True, repeat=True)`; *synthetic* = one in-memory "
             "batch of random images repeated. Stage 2 = `backbones.set_trainable_top_blocks(backbone, name, 2)`. "
             "The cached row is train.py's CPU fast path: `features.extract` of the pooled backbone once "
             f"(extraction rate in the notes), then head epochs over {s.head_rows} cached feature rows.")
    L.append("")
    L.append(HEAD)
    L.append(SEP)
    L += _table_rows(res, "train", "step")
    L.append("")
    for r in res:
        if r["kind"] == "train_pair" and "error" not in r["result"]:
            pp = r["result"]["paired"]
            L.append(f"Paired, {r['name'].split(',')[0]} (one process, one-epoch fits alternating real and synthetic on "
                     f"the same model, {len(pp['ratio_runs'])} rounds): "
                     + ", ".join(f"{k} {v['images_per_s']:.1f} img/s" for k, v in pp["per_feed"].items())
                     + f"; real / synthetic {_x(pp['ratio'])} (rounds {', '.join(f'{x:.2f}' for x in pp['ratio_runs'])}), "
                     f"peak RSS {r['result']['rss_peak_mb']:.0f} MB."
                     + ("" if "startup_s" not in pp["per_feed"]["real"] else
                        " Timed: the steps after each fit's first batch; that first batch (a new iterator: "
                        "shuffle buffer filled, first decodes) took "
                        + ", ".join(f"{k} {v['startup_s']:.2f} s" for k, v in pp["per_feed"].items())
                        + ", paid once per real epoch."))
            L.append("")
    head = _find(res, "train", "step", startswith="stage 1 head on cached")
    for k, v in tr.items():
        if "oneDNN" not in k:
            L.append(f"- {k}: {_x(v)}")
    if head:
        L.append(f"- feature extraction for the cache: {_f(head['extract_images_per_s'])} img/s "
                 f"(runs {', '.join(f'{x:.0f}' for x in head['extract_runs'])}); a head epoch over cached features "
                 f"runs at {_f(head['images_per_s'], 0)} img/s.")
    L.append("")
    L.append(_train_note(tr, res, s))
    L.append("")
    L.append("### TF_ENABLE_ONEDNN_OPTS")
    L.append("")
    L.append(HEAD)
    L.append(SEP)
    L += _table_rows(res, "train", "onednn")
    L += _table_rows(res, "infer", "onednn")
    L.append("")
    for k, v in list(tr.items()) + list(ratios["infer"].items()):
        if "oneDNN" in k:
            L.append(f"- {k}: {_x(v)}")
    L.append("")
    L.append("The default rows (no variable set) are the stage 1 synthetic row above and the predict row "
             "below; this TF build turns oneDNN on by default on x86 (`IsMklEnabled()` is true without the "
             "variable), so `=1` should equal the default.")
    L.append("")
    # ---------------------------------------------------------------- 3 infer
    L.append("## 3. Inference")
    L.append("")
    L.append(f"Batch {s.infer_batch} from `pipeline.make_dataset(kaggle200 records)` at each backbone's own size. "
             "*features* = `features.extract` of backbone + pooling; *predict* = `predict.predict_batches` of "
             "`Classifier.inference_model()`; the ensemble is `ensemble.build_ensemble` of the members (it resizes "
             "inside the graph to each member's size). The first batch (tracing) is left out; the runs are "
             "consecutive chunks of batches within one call.")
    L.append("")
    L.append(HEAD)
    L.append(SEP)
    L += _table_rows(res, "infer", "models")
    L.append("")
    # ---------------------------------------------------------------- 4 build
    L.append("## 4. Records build")
    L.append("")
    L.append(f"`records.build` of the {p['native']['count']} native photos (val_fraction 0.1, one writer thread per "
             "core) into a fresh folder each run; the zip holds the same photos (deflated), like Kaggle's "
             "train.zip. The images are checked (fully decoded once with PIL) and written as-is; with --max_side "
             "the larger ones are also re-encoded.")
    L.append("")
    L.append(HEAD)
    L.append(SEP)
    L += _table_rows(res, "build", "build")
    L.append("")
    # ---------------------------------------------------------------- 5 scale
    L.append("## 5. Scaling (CPU stand-in for GPUs)")
    L.append("")
    L.append("MirroredStrategy over logical CPU devices (`tf.config.set_logical_device_configuration` in a fresh "
             "process before TF starts), stage 1 step, synthetic input, global batch "
             f"{s.train_batch}. The pipeline rows pin the process with `taskset -c 0` vs `-c 0,1`.")
    L.append("")
    L.append(HEAD)
    L.append(SEP)
    L += _table_rows(res, "scale", "mirrored")
    L += _table_rows(res, "scale", f"native {s.sizes[0]} cores")
    L.append("")
    for k, v in ratios["scale"].items():
        L.append(f"- {k}: {_x(v)}")
    L.append("")
    L.append(_scale_note(ratios["scale"], res, s))
    L.append("")
    L.append(_gpu_text(data["gpu"], s))
    L.append("")
    L.append(_changes_note())
    L.append("")
    errors = [r for r in res if "error" in r["result"]]
    if errors:
        L.append("## Failed rows")
        L.append("")
        for r in errors:
            L.append(f"- {r['section']} | {r['table']} | {r['name']}: {r['result']['error'][:300]}")
        L.append("")
    path.write_text("\n".join(L))


def _max_side_gain(res, s: Settings) -> str:
    out = []
    for z in s.sizes:
        a = next((x["result"] for x in res if x["section"] == "pipeline" and x["table"] == f"native {z}"
                  and x["params"].get("loader") == "limit" and not x["params"].get("variant")
                  and "error" not in x["result"]), None)
        b = next((x["result"] for x in res if x["section"] == "pipeline" and x["table"] == f"native {z}"
                  and x["params"].get("loader") == "limit" and x["params"].get("variant")
                  and "error" not in x["result"]), None)
        if a and b:
            out.append(f"{a['cpu_images_per_s']:.0f} -> {b['cpu_images_per_s']:.0f} img/CPU-s at {z} px with "
                       f"--max_side={s.max_side[z]} ({_x(b['cpu_images_per_s'] / a['cpu_images_per_s'])})")
    b0 = _find(res, "build", "build", name="folder -> shards")
    b1 = _find(res, "build", "build", startswith="folder -> shards, --max_side")
    if b0 and b1:
        out.append(f"the price is paid once, at build time: {b0['images_per_s']:.0f} -> {b1['images_per_s']:.0f} "
                   "img/s (section 4), for re-encoding")
    return "; ".join(out) or "n/a"


def _onednn_default(res) -> bool:
    for r in res:
        if not r.get("env") and r["result"].get("onednn") is not None:
            return bool(r["result"]["onednn"])
    return False


def _memory_note(res, s: Settings) -> str:
    parts = []
    for r in res:
        x = r["result"]
        if r["section"] == "pipeline" and "error" not in x and r["params"].get("loader") in (
                "ours-train", "ours-eval", "ours-train-old", "limit") and not r["params"].get("variant"):
            parts.append(f"{r['table']} {r['name'].split(':')[0]}: +{x['rss_peak_mb'] - x['rss_base_mb']:.0f} MB")
    return ("**What drives memory.** A decoded image is size x size x 3 float32: %.2f MB at 224, %.2f MB at 299; a "
            "serialized record is 10-50 KB. Every buffer that holds decoded images costs that per element: a "
            "shuffle buffer placed after decoding (2048 elements by default: %.1f GB at 224, %.1f GB at 299 once "
            "the split is larger than the buffer; here the %d-photo subsets cap it at %d elements), the parallel "
            "map's and batch's in-flight elements (AUTOTUNE, a few per core), the prefetched batches (AUTOTUNE, a "
            "few batches of %d) and `cache=True` (the whole decoded split: 18,000 images at 224 = %.1f GB). Peak "
            "RSS over import per row: %s." % (
                224 * 224 * 12 / 1e6, 299 * 299 * 12 / 1e6, 2048 * 224 * 224 * 12 / 1e9, 2048 * 299 * 299 * 12 / 1e9,
                s.n_images, s.n_images, s.batch, 18000 * 224 * 224 * 12 / 1e9, "; ".join(parts) if parts else "n/a"))


def _pipeline_findings(res, ratios, s: Settings) -> str:
    def span(vals):
        vals = [v for v in vals if v is not None]
        return "n/a" if not vals else (_x(min(vals)) if len(vals) == 1 else f"{_x(min(vals))}-{_x(max(vals))}")

    pr = ratios["pipeline"]
    tr = {k: v for k, v in pr.items() if k.split(" | ")[1].startswith("ours, training=True")}
    ev = {k: v for k, v in pr.items() if k.split(" | ")[1].startswith("ours, training=False")}
    n = len(tr)
    met = sum((v["x_limit_paired"] or 0) >= 0.9 for v in tr.values())
    met_ev = sum((v["x_limit_paired"] or 0) >= 0.9 for v in ev.values())
    idg = [v["x_idg"] for v in tr.values()]
    met_idg = sum((x or 0) >= 3 for x in idg)

    def rate(table, loader):
        r = next((x["result"] for x in res if x["section"] == "pipeline" and x["table"] == table
                  and x["params"].get("loader") == loader and not x["params"].get("variant")
                  and "error" not in x["result"]), None)
        return r["cpu_images_per_s"] if r else None

    aa = [f"{t.split()[1]} px: {_x(rate(t, 'limit-noaa') / rate(t, 'limit'))}" for t in
          dict.fromkeys(x["table"] for x in res if x["section"] == "pipeline" and x["table"].startswith("native"))
          if rate(t, "limit-noaa") and rate(t, "limit")]
    lines = [
        "**Targets.** ours (training=True) vs the decode+resize limit, paired: %s (>= 0.9x in %d of %d tables; "
        "isolated rows %s wall clock, %s per CPU-second); training=False, paired: %s (>= 0.9x in %d of %d). "
        "ours vs ImageDataGenerator: %s (>= 3x in %d of %d); vs image_dataset_from_directory: %s." % (
            span([v["x_limit_paired"] for v in tr.values()]), met, n, span([v["x_limit"] for v in tr.values()]),
            span([v["x_limit_cpu"] for v in tr.values()]), span([v["x_limit_paired"] for v in ev.values()]), met_ev,
            len(ev), span(idg), met_idg, n, span([v["x_idfd"] for v in tr.values()])),
        _idg_misses(res, tr),
        "",
        "Reading the ratios: ours does the limit's per-image work (the same `decode_resize`) plus reading and "
        "parsing records, shuffling and batching. Where an isolated wall-clock ratio strays from the paired one, "
        "the row got more or fewer cores than its reference (the *cores used* and *others' cores* columns: other "
        "people's jobs). ImageDataGenerator is one Python thread (PIL decode, nearest-neighbour resize, a scipy "
        "affine warp per image): it uses one core whatever the machine has, so its gap to ours grows with the "
        "cores. `image_dataset_from_directory` decodes and resizes with plain (not antialiased) bilinear "
        "interpolation and no augmentation: on the native photos, which are downscaled, that aliasing resize is "
        "why it is faster; the *full decode + plain bilinear* row shows what dropping the antialiasing would buy "
        "(per CPU-second, x the limit: %s). Antialiasing stays on for downscaling (a quality choice, and models "
        "already trained expect it); where no side shrinks, as for every kaggle200 photo at 224-299 px, it "
        "changes nothing and is now skipped (see *Pipeline changes* at the end)." % (", ".join(aa) or "n/a"),
    ]
    return "\n".join(lines)


def _idg_misses(res, tr: dict) -> str:
    misses = []
    for key, v in tr.items():
        if v["x_idg"] is None or v["x_idg"] >= 3:
            continue
        table = key.split(" | ")[0]
        ours = _find(res, "pipeline", table, name="ours, training=True")
        idg = _find(res, "pipeline", table, startswith="ImageDataGenerator")
        if ours and idg:
            misses.append(f"{table} ({_x(v['x_idg'])}: ours used {ours['cores_used']:.2f} cores, ImageDataGenerator "
                          f"{idg['cores_used']:.2f}; per CPU-second {_x(v['x_idg_cpu'])})")
    if not misses:
        return ""
    table = next(k.split(" | ")[0] for k, v in tr.items() if v["x_idg"] is not None and v["x_idg"] < 3)
    lim = _find(res, "pipeline", table, name="limit: decode+resize in memory")
    noaa = _find(res, "pipeline", table, startswith="limit, full decode + plain bilinear")
    share = (f" (antialiasing alone is {100 * (1 - lim['cpu_images_per_s'] / noaa['cpu_images_per_s']):.0f}% of the "
             "per-image CPU there: compare the plain-bilinear row)") if lim and noaa else ""
    return (" Missed: " + "; ".join(misses) + ". Other jobs held about one of the two cores during those rows, so "
            "ours ran on one core like the single-threaded ImageDataGenerator; per core, the antialiased downscaling "
            f"of native photos{share} keeps ours under 3x. ImageDataGenerator cannot use a second core, ours can, "
            "so with both cores free the ratio would be about twice this.")


def _train_note(tr: dict, res, s: Settings) -> str:
    r = tr.get("stage 1 real/synthetic, paired")
    pred = tr.get("stage 1 predicted real/synthetic from CPU cost")
    if r is None:
        return ""
    syn = _find(res, "train", "step", name="stage 1, synthetic input")
    pipe = _find(res, "pipeline", f"k200 {s.train_size if s.train_size in s.sizes else s.sizes[0]}",
                 name="ours, training=True")
    headroom = pipe["images_per_s"] / syn["images_per_s"] if pipe and syn else None
    return ("On this CPU-only machine the input pipeline and the model share the same 2 cores, so real input can "
            "only match synthetic input if decoding costs nothing: every CPU-second spent decoding is taken from "
            f"the model. Stage 1 measured {_x(r)} (paired); the CPU accounting predicts {_x(pred)} (the step's "
            "CPU time per image against the pipeline's CPU time per image, both measured in this run). The "
            f"pipeline alone delivers {_x(headroom)} the images per second the stage 1 step consumes, so it never "
            "starves the step; what is lost is the cores it borrows"
            + (" and, when the measured loss exceeds that CPU cost, the contention of its threads with the "
               "model's intra-op threads on too few cores (context switches, caches)" if pred and r < pred - 0.03
               else "")
            + ". On a GPU machine the decoding runs on host cores the model does not use, which is what the "
            "estimate in section 5 counts.")


def _scale_note(sc: dict, res, s: Settings) -> str:
    m = sc.get("mirrored 2 devices / 1 device")
    lim = sc.get("limit: 2 cores / 1 core")
    ours = sc.get("ours train: 2 cores / 1 core")
    two = [x["result"] for x in res if x["section"] == "scale" and x["name"].endswith("2 core(s)")
           and "error" not in x["result"]]
    used = statistics.median(r["cores_used"] for r in two) if two else None
    others = statistics.median(r["others_cores"] or 0 for r in two) if two else None
    m1 = _find(res, "scale", "mirrored", startswith="MirroredStrategy, 1")
    m2 = _find(res, "scale", "mirrored", startswith="MirroredStrategy, 2")
    m_cpu = _ratio(m2, m1, "cpu_images_per_s")
    cores = f" (cores used {m1['cores_used']:.2f} vs {m2['cores_used']:.2f})" if m1 and m2 else ""
    text = (f"MirroredStrategy with two logical devices runs at {_x(m)} the wall-clock speed of one device and "
            f"{_x(m_cpu)} per CPU-second{cores}: any wall-clock gain is a core that other jobs left free, not "
            "the second replica. On a CPU the "
            "replicas get no cores of their own (a single device already spreads each op over every core through "
            "TF's intra-op thread pool), and the gradients are all-reduced between them, so this CPU stand-in "
            "shows that the multi-device code path runs, not a speed-up; on GPUs each replica brings its own "
            "device. ")
    if used is not None and used < 1.5:
        text += (f"The 1-vs-2-core pipeline rows are void in this run: during the 2-core rows other jobs held "
                 f"{others:.2f} cores, so ours got {used:.2f} (ratios {_x(lim)} for decode+resize, {_x(ours)} for "
                 "ours). ")
    else:
        text += (f"The input pipeline scales with cores: {_x(lim)} for decode+resize and {_x(ours)} for ours from "
                 "1 to 2 cores (2 vCPUs may be hyperthreads of one physical core, which caps the gain below 2x). ")
    return text + ("Decoding is embarrassingly parallel (one image per map call, AUTOTUNE picks the parallelism), "
                   "so the pipeline stops scaling only when it runs out of host cores or disk bandwidth; the 1-core "
                   "rate is what the estimate below divides by.")


def _gpu_text(g: dict, s: Settings) -> str:
    L = ["### Estimate: one H100 (ESTIMATES, not measurements)", "",
         "Public figures used, all as estimates: NVIDIA DeepLearningExamples, "
         "TensorFlow2/Classification/ConvNets/efficientnet_v1 README (NGC tensorflow:21.09-tf2-py3): "
         f"EfficientNet-B0 (390M MACs, 224 px) on 1x A100 80GB, mixed precision training {A100_B0_TRAIN_AMP:,.0f} "
         f"img/s, FP16 inference at batch 1024 {A100_B0_INFER_FP16:,.0f} img/s. Lambda Labs, \"NVIDIA H100 Tensor "
         f"Core GPU - Deep Learning Performance Analysis\": vision models ~{H100_OVER_A100_VISION:.0f}x faster on "
         "an H100 SXM than an A100. Scaled by MACs (EfficientNet-Lite0/1/2: 407M/631M/899M, tensorflow/tpu "
         "EfficientNet-Lite README); lite has no squeeze-excite and ReLU6 instead of swish, so it is if anything "
         "faster per MAC than B0. Stage 1 on full images with a frozen backbone costs about one inference pass "
         "per image, so its input demand is nearer the inference figure than the training one. Cores = the "
         f"estimate / the decode+resize rate measured on ONE core of this machine at {s.sizes[0]} px (the output "
         "size barely changes the cost: decoding dominates).", ""]
    keys = [k for k, v in g["per_core_decode"].items() if v]
    L.append("| backbone | H100 train img/s (est.) | H100 inference img/s (est.) | " +
             " | ".join(f"cores, train / inference: {k}" for k in keys) + " |")
    L.append("|---|---:|---:|" + "---:|" * len(keys))
    for name, b in g["backbones"].items():
        L.append(f"| {name} ({b['size']}) | {b['h100_train_est']:,.0f} | {b['h100_infer_est']:,.0f} | " +
                 " | ".join(f"{b['cores'][k]['train']:.0f} / {b['cores'][k]['infer']:.0f}" for k in keys) + " |")
    L.append("")
    L.append("1-core decode+resize rates measured here: " + ", ".join(
        f"{k} {v:.0f} img/s" for k, v in g["per_core_decode"].items() if v) + " (kaggle200 derived from its "
        "2-core ratio to native in section 1). Reading it: one H100 fine-tuning lite0 end to end needs the "
        "number of host cores in the first column pair of decoding alone, a server with 8 H100s eight times that; "
        "typical 8-GPU servers have 100-200 cores, so with full-size photos decoding becomes the limit for the "
        "small backbones, `--max_side` (or kaggle200's 200-px photos) moves it back, and the cached-feature path "
        "decodes each photo only once (twice with flips). Beyond that: decode on the GPU (nvJPEG/DALI), or store "
        "pre-resized images.")
    return "\n".join(L)


def _changes_note() -> str:
    return ("## Pipeline changes made with this benchmark\n\n" + PIPELINE_CHANGES)


PIPELINE_CHANGES = """Two changes to `catdog_tf/pipeline.py`, both found with this benchmark; same outputs, less work:

1. `make_dataset(training=True)`: the shuffle buffer moved from after the decoding map to before it (right
   after the interleave and the optional per-worker shard), so it holds serialized records (10-50 KB each)
   instead of decoded float32 images (0.6 MB each at 224, 1.1 MB at 299). With `cache=...` the shuffle stays
   after the cache (otherwise every epoch would replay the cached first epoch's order). Same buffer size over
   the same stream, so the same randomness and the same decode work per image. What changes: peak memory
   (the 2048-element buffer of decoded images is 1.2 GB at 224 and 2.2 GB at 299 on the full training split;
   compare the *before the change* rows' RSS with *ours, training=True* on these 1,000-photo subsets) and the
   time to the first batch (the buffer is no longer filled by decoding: *first batch s*).
2. `decode_resize`: the antialiased resize (`tf.image.resize(..., antialias=True)`, 2-3x the CPU of a plain
   bilinear resize, more than the JPEG decode itself for 200 px photos) now runs only when a side shrinks.
   When both sides grow or stay, antialiasing is a no-op (outputs equal to 3e-5 on 0..255, i.e. float
   rounding) and the plain resize is used: kaggle200 photos at 224-299 px decode+resize about 2.2x faster per
   CPU-second (1537 vs 677 img/CPU-s at 224, 1070 vs 437 at 299, measured before/after on the same records),
   and downscaled photos (kaggle_native) are unchanged.

`python -m pytest tests/test_pipeline.py -q` passes unchanged; `tests/test_bench.py` adds a check that
training datasets, cached or not, hold every example once per epoch in a new order each epoch.
Not changed, measured instead: antialiased downscaling of native photos costs 2-2.5x a plain bilinear one
(see the tables); `method="area"` would be about 2x cheaper with a box filter, but it changes the inputs
existing models were trained on, so it is a decision for the model owner, not a pipeline fix."""


# ============================================================================ entry points


def run_benchmark(out_md: str | None, out_json: str | None, quick: bool = False, sections=SECTIONS,
                  native_dir: str | None = None, k200_dir: str | None = None, work_dir: str | None = None,
                  keep_work: bool = False, command: str = "python -m catdog_tf.bench") -> dict:
    """Prepares the data, runs every row in its own subprocess, writes the JSON and Markdown."""
    t0 = time.time()
    s = Settings.small() if quick else Settings.full()
    native = Path(native_dir) if native_dir else SHARED_DATA / "kaggle_native" / "train"
    k200 = Path(k200_dir) if k200_dir else SHARED_DATA / "kaggle200" / "train"
    own_work = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="catdog-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"{'quick' if quick else 'full'} benchmark; work folder {work}")
    try:
        prep = prepare(work, native, k200, s)
        rows = plan(prep, s, sections)
        log(f"{len(rows)} rows in {', '.join(sections)}")
        meta = machine_info()
        results = run_all(rows, work / "logs", one_per_process=not quick)
        data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": meta,
                "settings": dataclasses.asdict(s), "prep": json.loads(json.dumps(prep)), "rows": results}
        data["ratios"] = compute_ratios(results, s)
        data["gpu"] = gpu_estimate(results, s)
        data["total_minutes"] = (time.time() - t0) / 60
        if out_json:
            Path(out_json).parent.mkdir(parents=True, exist_ok=True)
            Path(out_json).write_text(json.dumps(data, indent=1))
            log(f"wrote {out_json}")
        if out_md:
            write_markdown(Path(out_md), data)
            log(f"wrote {out_md}")
        failed = sum("error" in r["result"] for r in results)
        log(f"done in {data['total_minutes']:.1f} min; {failed} failed row(s)")
        return data
    finally:
        if own_work and not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if F.render:  # re-write the Markdown from a JSON of an earlier run, measuring nothing
        data = json.loads(Path(F.render).read_text())
        out_md = F.out_md or str(Path(F.render).with_suffix(".md"))
        write_markdown(Path(out_md), data)
        log(f"wrote {out_md} from {F.render}")
        return
    if F.child_rows:  # internal: one subprocess running rows
        rows = json.loads(Path(F.child_rows).read_text())
        out = run_rows_here(rows, F.child_cpu_devices)
        Path(F.child_out).write_text(json.dumps(out))
        return
    sections = tuple(x.strip() for x in F.sections.split(",") if x.strip())
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; choose from {SECTIONS}")
    out_md, out_json = F.out_md, F.out_json
    if out_md is None:
        out_md = None if F.quick else str(REPO / "BENCHMARKS.md")
    if out_json is None:
        out_json = str(Path(out_md).with_suffix(".json")) if out_md else None
    args = [a for a in sys.argv[1:]]
    command = "python -m catdog_tf.bench" + ("" if not args else " " + " ".join(args))
    data = run_benchmark(out_md or None, out_json or None, quick=F.quick, sections=sections, native_dir=F.native,
                         k200_dir=F.kaggle200, work_dir=F.work_dir, keep_work=F.keep_work, command=command)
    if any("error" in r["result"] for r in data["rows"]):
        raise SystemExit(1)


def _define_flags():
    from absl import flags

    flags.DEFINE_bool("quick", False, "Every row on a tiny subset (< 2 min); figures not meaningful.")
    flags.DEFINE_string("sections", ",".join(SECTIONS), "Comma-separated subset of: " + ", ".join(SECTIONS))
    flags.DEFINE_string("out_md", None, "Markdown report (default: BENCHMARKS.md in the repo; none with --quick).")
    flags.DEFINE_string("out_json", None, "JSON of every row (default: next to --out_md).")
    flags.DEFINE_string("native", None, "Folder of native-size Kaggle photos (default ../shared/data/kaggle_native/train).")
    flags.DEFINE_string("kaggle200", None, "Folder of 200 px Kaggle photos (default ../shared/data/kaggle200/train).")
    flags.DEFINE_string("work_dir", None, "Scratch folder for links, records and logs (default: a temp folder).")
    flags.DEFINE_bool("keep_work", False, "Keep the temporary work folder (logs of every row).")
    flags.DEFINE_string("render", None, "Only re-write the Markdown (--out_md, default next to it) from this JSON.")
    flags.DEFINE_string("child_rows", None, "Internal: JSON file of rows to run in this process.")
    flags.DEFINE_string("child_out", None, "Internal: where the child writes its results.")
    flags.DEFINE_integer("child_cpu_devices", 0, "Internal: logical CPU devices of the child.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
