"""What a run measures: its sizes (Settings), its rows in run order (Row, plan) and the
photos it reads (pick). No TensorFlow here: the parent process plans, children measure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from catdog_tf.data import kaggle
from catdog_tf.errors import UserError

SECTIONS = ("pipeline", "train", "infer", "build", "scale")
# Each EfficientNet-Lite's own input size (tensorflow/tpu models/official/efficientnet/lite).
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def parse_sections(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """--sections as a tuple in run order; an unknown name is a UserError."""
    names = [x.strip() for x in names if x.strip()]
    bad = [x for x in names if x not in SECTIONS]
    if bad:
        raise UserError(f"--sections: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if not names:
        raise UserError(f"--sections: name at least one of {', '.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in names)


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
                        pair_rounds=5)

    @staticmethod
    def small() -> "Settings":
        return Settings(quick=True, n_images=32, sizes=(96,), max_side={96: 128}, batch=16, pipe_images=32,
                        idg_images=32, pipe_repeats=2, train_size=64, train_batch=8, train_steps=1,
                        train_repeats=1, infer_chunk=2, infer_repeats=2, infer_batch=8,
                        backbones=(("efficientnet_lite0", 64), ("efficientnet_lite1", 80)), weights=None,
                        head_rows=2048, build_repeats=2, pair_rounds=2)


def by_size(d: dict, size: int):
    """d[size], also after a JSON round trip turned the keys into strings."""
    return d[size] if size in d else d[str(size)]


def pick(folder: Path, n: int) -> list[Path]:
    """n labeled photos of a Kaggle train folder, half cats and half dogs, lowest ids first."""
    by: dict[int, list] = {label: [] for label in kaggle.LABELS.values()}
    for p in folder.iterdir():
        name = kaggle.parse(p.name)
        if name is not None and name.labeled:
            by[name.label].append((int(name.id.split(".")[1]), p))
    return [p for label in sorted(by) for _, p in sorted(by[label])[: n // 2]]


# Every loader the pipeline rows measure (rows.py builds each). tables.py leaves out the rows,
# and the paired figures, of any other loader (an earlier run's JSON may hold some).
LOADERS = ("decode", "limit", "ours-train", "ours-eval", "area", "limit-noaa", "idg", "idfd")
# Loaders of a paired row: the first is the reference of `ratios`; `versus` has every pair.
PAIR_LOADERS = ["idfd", "ours-train", "ours-eval", "decode", "limit"]
# Loaders whose images are decode_resize's (so they share one fidelity figure per records).
SAME_PIXELS = ("limit", "ours-train", "ours-eval")


def _fidelity_key(loader: str, variant: str) -> str | None:
    if loader == "decode":
        return None  # not resized: no image to compare
    base = "ours" if loader in SAME_PIXELS else loader
    return f"{base} {variant}".strip()


def _pipeline_rows(prep: dict, s: Settings) -> list[Row]:
    rows = []
    b = s.batch
    for ds in ("native", "k200"):
        d = prep[ds]
        for size in s.sizes:
            table = f"{ds} {size}"
            common = dict(size=size, batch=b, steps=max(1, s.pipe_images // b), repeats=s.pipe_repeats,
                          warmup=s.warmup)
            table_rows = []
            variants = [("", d["records"])]
            if ds == "native":  # kaggle200 photos are 200 px: --max_side >= 200 stores the same bytes
                variants += [(f" --max_side={s.max_side[size]}", by_size(d["records_ms"], size)),
                             (f" --store_size={size}", by_size(d["records_ss"], size))]
            for suffix, rec in variants:
                v = dict(common, records=rec, variant=suffix.strip())
                table_rows += [
                    Row("pipeline", table, f"decode alone at the chosen DCT scale, in memory{suffix}", "pipe",
                        dict(v, loader="decode")),
                    Row("pipeline", table, f"decode_resize, in memory{suffix}", "pipe", dict(v, loader="limit")),
                    Row("pipeline", table, f"ours, training=True{suffix}", "pipe", dict(v, loader="ours-train")),
                    Row("pipeline", table, f"ours, training=False{suffix}", "pipe", dict(v, loader="ours-eval"))]
                table_rows.append(Row("pipeline", table, f"paired: {' / '.join(PAIR_LOADERS)}{suffix}", "pair",
                                      dict(v, loaders=PAIR_LOADERS, rounds=s.pair_rounds, classes=d["classes"])))
            if ds == "native":
                table_rows += [
                    Row("pipeline", table, "candidate: area resize on every side that shrinks, in memory", "pipe",
                        dict(common, loader="area", records=d["records"])),
                    Row("pipeline", table, "full decode + plain bilinear (the Keras loader's work), in memory", "pipe",
                        dict(common, loader="limit-noaa", records=d["records"]))]
            table_rows += [
                Row("pipeline", table, "ImageDataGenerator.flow_from_directory", "pipe",
                    dict(common, loader="idg", classes=d["classes"], steps=max(1, s.idg_images // b),
                         repeats=min(3, s.pipe_repeats))),
                Row("pipeline", table, "keras.utils.image_dataset_from_directory", "pipe",
                    dict(common, loader="idfd", classes=d["classes"]))]
            specs = {}
            for r in table_rows:
                if r.kind == "pipe":
                    key = _fidelity_key(r.params["loader"], r.params.get("variant", ""))
                    r.params["fidelity_key"] = key
                    if key is not None:
                        specs[key] = {"loader": key.split()[0], "records": r.params.get("records"),
                                      "classes": r.params.get("classes")}
            rows += table_rows
            rows.append(Row("pipeline", table, "fidelity vs PIL's antialiased resize", "fidelity",
                            dict(size=size, flat=d["flat"], specs=specs)))
    return rows


def _train_rows(tr: dict, s: Settings) -> list[Row]:
    rows = [Row("train", "step", f"stage 1, {feed} input", "train", dict(tr, stage=1, feed=feed))
            for feed in ("real", "synthetic")]
    rows += [Row("train", "step", f"stage {stage}, paired: real / synthetic", "train_pair", dict(tr, stage=stage))
             for stage in (1, 2)]
    rows.append(Row("train", "step", "stage 1 head on cached pooled features", "head_cached",
                    dict(tr, head_rows=s.head_rows, chunk=s.infer_chunk, infer_repeats=s.infer_repeats)))
    for v in ("0", "1"):
        rows.append(Row("train", "onednn", f"stage 1, synthetic, TF_ENABLE_ONEDNN_OPTS={v}", "train",
                        dict(tr, stage=1, feed="synthetic"), env={"TF_ENABLE_ONEDNN_OPTS": v}))
    return rows


def _infer_rows(records: str, s: Settings) -> list[Row]:
    inf = dict(weights=s.weights, batch=s.infer_batch, chunk=s.infer_chunk, repeats=s.infer_repeats,
               warmup=s.warmup, records=records)
    rows = []
    for name, size in s.backbones:
        for what in ("features", "predict"):
            rows.append(Row("infer", "models", f"{name} {size}: {what}", "infer",
                            dict(inf, what=what, members=[[name, size]])))
    short = " + ".join(n.replace("efficientnet_", "") for n, _ in s.backbones)
    rows.append(Row("infer", "models", f"ensemble of {short}: predict", "infer",
                    dict(inf, what="ensemble", members=[list(m) for m in s.backbones])))
    name, size = s.backbones[0]
    rows.append(Row("infer", "onednn", f"{name} {size}: predict, TF_ENABLE_ONEDNN_OPTS=0", "infer",
                    dict(inf, what="predict", members=[[name, size]]), env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
    return rows


def _scale_rows(prep: dict, tr: dict, s: Settings) -> list[Row]:
    rows = [Row("scale", "mirrored", f"MirroredStrategy, {n} logical CPU device(s)", "train",
                dict(tr, stage=1, feed="synthetic", strategy="mirrored"), cpu_devices=n if n > 1 else 0)
            for n in (1, 2)]
    d = prep["native"]
    for size in s.sizes:  # the 1-core rates of the GPU estimate, at each size; 2 cores at the first
        common = dict(size=size, batch=s.batch, steps=max(1, s.pipe_images // s.batch), repeats=s.pipe_repeats,
                      warmup=s.warmup)
        ms = s.max_side[size]
        for cpus in ("0", "0,1") if size == s.sizes[0] else ("0",):
            n = len(cpus.split(","))
            for suffix, rec in (("", d["records"]), (f" --max_side={ms}", by_size(d["records_ms"], size)),
                                (f" --store_size={size}", by_size(d["records_ss"], size))):
                rows.append(Row("scale", "native cores", f"{size} px: decode_resize{suffix}, {n} core(s)", "pipe",
                                dict(common, loader="limit", records=rec), cpus=cpus))
            if size == s.sizes[0]:
                rows.append(Row("scale", "native cores", f"{size} px: ours, training=True, {n} core(s)", "pipe",
                                dict(common, loader="ours-train", records=d["records"]), cpus=cpus))
    return rows


def plan(prep: dict, s: Settings, sections=SECTIONS) -> list[Row]:
    """Rows in run order. `prep` is what prepare.prepare made (folders, records, zip)."""
    tr = dict(backbone="efficientnet_lite0", weights=s.weights, size=s.train_size, batch=s.train_batch,
              steps=s.train_steps, repeats=s.train_repeats, warmup=s.warmup, records=prep["k200"]["records"])
    rows: list[Row] = []
    if "pipeline" in sections:
        rows += _pipeline_rows(prep, s)
    if "train" in sections:
        rows += _train_rows(tr, s)
    if "infer" in sections:
        rows += _infer_rows(prep["k200"]["records"], s)
    if "build" in sections:
        d = prep["native"]
        bb = dict(repeats=s.build_repeats, warmup=s.warmup, work=prep["work"])
        ms = s.max_side[s.sizes[0]]
        rows += [Row("build", "build", "folder -> shards", "build", dict(bb, source=d["flat"])),
                 Row("build", "build", "zip -> shards", "build", dict(bb, source=d["zip"])),
                 Row("build", "build", f"folder -> shards, --max_side={ms}", "build",
                     dict(bb, source=d["flat"], max_side=ms)),
                 Row("build", "build", f"folder -> shards, --store_size={s.sizes[0]}", "build",
                     dict(bb, source=d["flat"], store_size=s.sizes[0]))]
    if "scale" in sections:
        rows += _scale_rows(prep, tr, s)
    return rows
