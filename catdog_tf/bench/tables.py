"""Numbers -> Markdown: the headline ratios, the GPU estimate arithmetic and one generated
block per table. Only figures here; what they mean is written in BENCHMARKS.md around the
blocks (document.py puts each block between its markers).
"""

from __future__ import annotations

import dataclasses

from catdog_tf.bench.plan import LITE_SIZES, LOADERS, SECTIONS, Settings

# Public figures used for the GPU estimate (estimates, not measurements of ours):
# NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/efficientnet_v1/README.md
# (tensorflow:21.09-tf2-py3): EfficientNet-B0 (390M MACs, 224 px) on 1x A100-80GB.
A100_B0_TRAIN_AMP = 3454.0  # img/s, training, mixed precision, 1 GPU
A100_B0_INFER_FP16 = 9729.85  # img/s, inference, FP16, batch 1024
# Lambda Labs, "NVIDIA H100 Tensor Core GPU - Deep Learning Performance Analysis": vision
# models train ~2x faster on an H100 SXM than on an A100 SXM.
H100_OVER_A100_VISION = 2.0
# Throughput relative to EfficientNet-B0 in ONE harness (timm's benchmark.py, PyTorch 1.12,
# AMP, channels-last, RTX 3090): huggingface/pytorch-image-models results/
# benchmark-{train,infer}-amp-nhwc-pt112-cu113-rtx3090.csv, img/s (train, inference).
TIMM_RTX3090 = {"efficientnet_b0": (1751.72, 8015.36), "efficientnet_lite0": (2079.28, 9415.07),
                "efficientnet_lite1": (1530.99, 6215.56), "efficientnet_lite2": (1191.67, 4791.14),
                "xception": (497.64, 1578.2)}
# The backbones of the estimate at their own input sizes.
GPU_BACKBONES = {**LITE_SIZES, "xception": 299}

HEAD = ("| row | img/s (median) | runs | img/CPU-s | cores used | others' cores | peak RSS MB | "
        "RSS over import MB |")
SEP = "|---|---:|---:|---:|---:|---:|---:|---:|"


@dataclasses.dataclass
class Block:
    """One generated block: BENCHMARKS.md holds `text` between the markers of `name`;
    `section` and `title` head it in the stand-alone bench.md."""

    name: str
    section: str
    title: str | None
    text: str


def current(results: list[dict]) -> list[dict]:
    """The rows of loaders in plan.LOADERS (rows without a loader too), each paired row with
    the figures of those loaders only: what the ratios and tables are made of. A run's JSON
    keeps every row it measured; an earlier run's may hold loaders the plan no longer has."""
    out = []
    for r in results:
        loader = r["params"].get("loader")
        if loader is not None and loader not in LOADERS:
            continue
        if r["kind"] == "pair":
            keep = [a for a in r["params"]["loaders"] if a in LOADERS]
            r = {**r, "params": {**r["params"], "loaders": keep}}
            if "paired" in r["result"]:
                pp = r["result"]["paired"]
                pp = {**pp, "per_loader": {a: v for a, v in pp["per_loader"].items() if a in keep},
                      "ratios": {a: v for a, v in pp.get("ratios", {}).items() if a in keep},
                      "versus": {a: {b: x for b, x in vs.items() if b in keep}
                                 for a, vs in pp.get("versus", {}).items() if a in keep}}
                r["result"] = {**r["result"], "paired": pp}
        out.append(r)
    return out


def find(results, section, table=None, name=None, startswith=None):
    """The result of the first matching row that did not fail, or None."""
    for r in results:
        if r["section"] != section or (table is not None and r["table"] != table):
            continue
        if (name is not None and r["name"] == name) or (startswith is not None and r["name"].startswith(startswith)):
            return r["result"] if "error" not in r["result"] else None
    return None


def ratio(a, b, key="images_per_s"):
    if not a or not b or not b.get(key):
        return None
    return a[key] / b[key]


def _pipe(results, table, loader, variant=None, kind=None):
    """The result of a pipeline row of `table` by loader (and variant), or None."""
    return next((x["result"] for x in results if x["section"] == "pipeline" and x["table"] == table
                 and (loader is None or x["params"].get("loader") == loader)
                 and (kind is None or x["kind"] == kind)
                 and (variant is None or x["params"].get("variant", "") == variant)
                 and "error" not in x["result"]), None)


def _fidelity(results, table) -> dict:
    """key -> mean |error| from the table's fidelity row ({} when it failed or did not run)."""
    for x in results:
        if (x["section"], x["table"], x["kind"]) == ("pipeline", table, "fidelity") and "error" not in x["result"]:
            return x["result"]["fidelity"]
    return {}


def _paired(pair, a: str, b: str, key: str):
    v = pair["paired"].get("versus", {}).get(a, {}).get(b) if pair else None
    return v[key] if v else None


def _pipeline_ratios(results) -> dict:
    """Per pipeline row: its fidelity, and its images/s over decode alone, the Keras loader and
    ImageDataGenerator (isolated rows, and paired where both loaders ran in the paired row)."""
    out = {}
    for r in results:
        if r["section"] != "pipeline" or r["kind"] != "pipe":
            continue
        loader, variant = r["params"]["loader"], r["params"].get("variant", "")
        res = r["result"] if "error" not in r["result"] else None
        dec = _pipe(results, r["table"], "decode", variant)
        idfd = _pipe(results, r["table"], "idfd")
        idg = _pipe(results, r["table"], "idg")
        pair = _pipe(results, r["table"], None, variant, kind="pair")
        key = r["params"].get("fidelity_key")
        v = {"loader": loader, "variant": variant, "fidelity": _fidelity(results, r["table"]).get(key) if key else None,
             "x_decode": ratio(res, dec), "x_decode_cpu": ratio(res, dec, "cpu_images_per_s"),
             "x_idfd": ratio(res, idfd), "x_idfd_cpu": ratio(res, idfd, "cpu_images_per_s"),
             "x_idg": ratio(res, idg), "x_idg_cpu": ratio(res, idg, "cpu_images_per_s")}
        for other in ("idfd", "decode"):
            v[f"x_{other}_paired"] = _paired(pair, loader, other, "ratio")
            v[f"x_{other}_paired_cpu"] = _paired(pair, loader, other, "cpu")
        out[f"{r['table']} | {r['name']}"] = v
    return out


def _train_ratios(results, s: Settings) -> dict:
    out = {}
    for stage in (1, 2):
        pair = find(results, "train", "step", name=f"stage {stage}, paired: real / synthetic")
        out[f"stage {stage} real/synthetic, paired"] = pair["paired"]["ratio"] if pair else None
        out[f"stage {stage} real/synthetic, paired (CPU)"] = pair["paired"]["ratio_cpu"] if pair else None
    real = find(results, "train", "step", name="stage 1, real input")
    syn = find(results, "train", "step", name="stage 1, synthetic input")
    out["stage 1 real/synthetic, isolated rows"] = ratio(real, syn)
    out["stage 1 real/synthetic, isolated rows (CPU)"] = ratio(real, syn, "cpu_images_per_s")
    head = find(results, "train", "step", startswith="stage 1 head on cached")
    if head and real:
        out["cached head epoch / full frozen-backbone epoch"] = head["images_per_s"] / real["images_per_s"]
        # train.py's stage 1: extract train + flipped train once, then E epochs over 2N rows,
        # vs E epochs of N images through the frozen backbone (with in-model augmentation).
        e = 10
        t_cached = 2 / head["extract_images_per_s"] + e * 2 / head["images_per_s"]
        t_full = e / real["images_per_s"]
        out[f"stage 1 end to end, {e} epochs (cached incl. extraction with flips)"] = t_full / t_cached
    size = s.sizes[0] if s.quick else s.train_size
    pipe = find(results, "pipeline", f"k200 {size}", name="ours, training=True")
    if syn and pipe:
        # The pipeline's CPU time per image comes out of the model's cores on a CPU-only box.
        c_step, c_pipe = 1 / syn["cpu_images_per_s"], 1 / pipe["cpu_images_per_s"]
        out["stage 1 predicted real/synthetic from CPU cost"] = c_step / (c_step + c_pipe)
    for env in ("0", "1"):
        a = find(results, "train", "onednn", name=f"stage 1, synthetic, TF_ENABLE_ONEDNN_OPTS={env}")
        out[f"oneDNN={env} / default, stage 1 synthetic"] = ratio(a, syn)
    return out


def compute_ratios(results: list[dict], s: Settings) -> dict:
    """The headline ratios (wall-clock images/s and, in brackets, images per CPU-second)."""
    results = current(results)
    out: dict = {"pipeline": _pipeline_ratios(results), "train": _train_ratios(results, s), "infer": {},
                 "scale": {}}
    name, size = s.backbones[0]
    a = find(results, "infer", "onednn", startswith=f"{name} {size}: predict, TF_ENABLE_ONEDNN_OPTS=0")
    b = find(results, "infer", "models", name=f"{name} {size}: predict")
    out["infer"][f"oneDNN=0 / default, {name} predict"] = ratio(a, b)
    m1 = find(results, "scale", "mirrored", startswith="MirroredStrategy, 1")
    m2 = find(results, "scale", "mirrored", startswith="MirroredStrategy, 2")
    out["scale"]["mirrored 2 devices / 1 device"] = ratio(m2, m1)
    size, ms = s.sizes[0], s.max_side[s.sizes[0]]
    for label, stem in (("decode_resize", "decode_resize"),
                        (f"decode_resize --max_side={ms}", f"decode_resize --max_side={ms}"),
                        (f"decode_resize --store_size={size}", f"decode_resize --store_size={size}"),
                        ("ours train", "ours, training=True")):
        one = find(results, "scale", "native cores", name=f"{size} px: {stem}, 1 core(s)")
        two = find(results, "scale", "native cores", name=f"{size} px: {stem}, 2 core(s)")
        out["scale"][f"{label}: 2 cores / 1 core"] = ratio(two, one)
    return out


def _per_core(results, s: Settings, size: int) -> dict:
    """1-core decode_resize img/s at `size`: native photos, native --max_side, native --store_size
    and kaggle200 (scaled from native by their 2-core ratio in section 1, same run)."""
    ms = s.max_side[size]
    one = {"native photos": find(results, "scale", "native cores", name=f"{size} px: decode_resize, 1 core(s)"),
           "native --max_side": find(results, "scale", "native cores",
                                     name=f"{size} px: decode_resize --max_side={ms}, 1 core(s)"),
           "native --store_size": find(results, "scale", "native cores",
                                       name=f"{size} px: decode_resize --store_size={size}, 1 core(s)")}
    out = {k: (v["images_per_s"] if v else None) for k, v in one.items()}
    k2 = find(results, "pipeline", f"k200 {size}", name="decode_resize, in memory")
    n2 = find(results, "pipeline", f"native {size}", name="decode_resize, in memory")
    out["kaggle200 (200 px)"] = (out["native photos"] * k2["images_per_s"] / n2["images_per_s"]
                                 if k2 and n2 and out["native photos"] else None)
    return out


def gpu_estimate(results: list[dict], s: Settings) -> dict:
    """Images/s an H100 would need per backbone (estimates from public figures) and the host
    cores of decode_resize that takes, from its 1-core rate measured at the size closest to
    the backbone's input size."""
    results = current(results)
    per_size = {size: _per_core(results, s, size) for size in s.sizes}
    b0_train, b0_infer = TIMM_RTX3090["efficientnet_b0"]
    out = {"per_core_decode": {str(k): v for k, v in per_size.items()},
           "max_side": {str(k): v for k, v in s.max_side.items()}, "backbones": {}}
    for name, size in GPU_BACKBONES.items():
        t, i = TIMM_RTX3090[name]
        train = A100_B0_TRAIN_AMP * H100_OVER_A100_VISION * t / b0_train
        infer = A100_B0_INFER_FP16 * H100_OVER_A100_VISION * i / b0_infer
        at = min(s.sizes, key=lambda z: abs(z - size))
        cores = {k: {"train": train / v, "infer": infer / v} for k, v in per_size[at].items() if v}
        out["backbones"][name] = {"size": size, "rate_size": at, "h100_train_est": train, "h100_infer_est": infer,
                                  "cores": cores}
    return out


# ---------------------------------------------------------------------------- Markdown


def _f(v, digits=1, suffix=""):
    return "n/a" if v is None else f"{v:,.{digits}f}{suffix}"


def _x(v):
    return "n/a" if v is None else f"{v:.2f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal | inside a table cell


def table_rows(results, section, table, extra_cols=None) -> list[str]:
    lines = []
    for r in results:
        if r["section"] != section or r["table"] != table or r["kind"] in ("pair", "train_pair", "fidelity"):
            continue
        res = r["result"]
        if "error" in res:
            lines.append(f"| {r['name']} | failed: {_cell(res['error'].splitlines()[0][:120])} |")
            continue
        runs = res.get("runs") or []
        cols = [r["name"], _f(res["images_per_s"]), f"{min(runs):.0f}-{max(runs):.0f}" if runs else "",
                _f(res["cpu_images_per_s"]), _f(res["cores_used"], 2), _f(res.get("others_cores"), 2),
                _f(res["rss_peak_mb"], 0), _f(res["rss_peak_mb"] - res["rss_base_mb"], 0)]
        if extra_cols:
            cols += extra_cols(r)
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def _run_block(data: dict, s: Settings) -> str:
    meta, res = data["machine"], data["rows"]
    onednn = next((bool(r["result"]["onednn"]) for r in res
                   if not r.get("env") and r["result"].get("onednn") is not None), False)
    mode = "quick mode: tiny subset, figures not meaningful" if s.quick else "full mode"
    return "\n".join([
        f"Made by `{data['command']}` on {data['date']} in {data['total_minutes']:.1f} min ({mode}).", "",
        f"Machine: {meta['cores']} cores ({meta['cpu_model']}), {meta['memory_gb']} GB RAM, Python {meta['python']}, "
        f"TensorFlow {meta['tensorflow']} ({meta.get('tensorflow_package', 'tensorflow-cpu')}), Keras {meta['keras']}, "
        f"TF_ENABLE_ONEDNN_OPTS {meta['TF_ENABLE_ONEDNN_OPTS']} (oneDNN {'on' if onednn else 'off'} by default in "
        f"this build); load average at start {', '.join(f'{x:.2f}' for x in meta['loadavg_at_start'])}."])


def _headline_pipeline(ratios: dict) -> str:
    L = ["| ratio | wall clock, paired | wall clock, isolated rows | per CPU-second, isolated | fidelity | target |",
         "|---|---:|---:|---:|---:|---|"]
    pipe = ratios["pipeline"]
    for key, v in pipe.items():
        if v["loader"] in ("ours-train", "ours-eval"):
            target = ">= 1.0x, fidelity <= 1.5" if key.startswith("native") else ""
            L.append(f"| {_cell(key)}: x image_dataset_from_directory | {_x(v['x_idfd_paired'])} | {_x(v['x_idfd'])} "
                     f"| {_x(v['x_idfd_cpu'])} | {_f(v['fidelity'], 2)} | {target} |")
    for key, v in pipe.items():
        if v["loader"] == "ours-train":
            L.append(f"| {_cell(key)}: x decode alone | {_x(v['x_decode_paired'])} | {_x(v['x_decode'])} "
                     f"| {_x(v['x_decode_cpu'])} | | |")
    for key, v in pipe.items():
        if v["loader"] == "ours-train" and not v["variant"]:
            L.append(f"| {_cell(key)}: x ImageDataGenerator | | {_x(v['x_idg'])} | {_x(v['x_idg_cpu'])} | | >= 3x |")
    return "\n".join(L)


def _headline_train(tr: dict) -> str:
    L = ["| ratio | wall clock | per CPU-second | target |", "|---|---:|---:|---|"]
    for st in (1, 2):
        L.append(f"| training step, stage {st}: real pipeline / synthetic (paired) | "
                 f"{_x(tr.get(f'stage {st} real/synthetic, paired'))} "
                 f"| {_x(tr.get(f'stage {st} real/synthetic, paired (CPU)'))} | >= 0.95x |")
    for key in ("cached head epoch / full frozen-backbone epoch",
                "stage 1 end to end, 10 epochs (cached incl. extraction with flips)"):
        L.append(f"| {key} | {_x(tr.get(key))} | | |")
    return "\n".join(L)


def _pipeline_table(res, ratios: dict, t: str) -> str:
    def extra(r):
        v = ratios["pipeline"].get(f"{t} | {r['name']}") or {}
        cols = [_f(r["result"].get("first_batch_s"), 2), _f(v.get("fidelity"), 2) if v.get("fidelity") else ""]
        for k in ("x_decode", "x_idfd"):
            cols.append(f"{_x(v[k])} ({_x(v[k + '_cpu'])} CPU)" if v.get(k) and v.get("loader") != k[2:] else "")
        cols.append(_x(v["x_idg"]) if v.get("x_idg") and v.get("loader") != "idg" else "")
        return cols

    L = [HEAD + " first batch s | fidelity | x decode alone | x image_dataset_from_directory | x ImageDataGenerator |",
         SEP + "---:|---:|---:|---:|---:|"]
    L += table_rows(res, "pipeline", t, extra)
    for r in res:
        if r["section"] == "pipeline" and r["table"] == t and r["kind"] == "pair" and "error" not in r["result"]:
            pp = r["result"]["paired"]
            per, vs = pp["per_loader"], pp.get("versus", {})
            variant = " " + r["params"]["variant"] if r["params"].get("variant") else ""
            pairs = [(a, pp["base"]) for a in per if a != pp["base"]] + [("ours-train", "decode")]
            L += ["", f"Paired{variant} (one process, {len(per[pp['base']]['runs'])} alternating rounds): "
                  + ", ".join(f"{k} {v['images_per_s']:.0f} img/s" for k, v in per.items()) + "; "
                  + ", ".join(f"{a} / {b} {_x(vs[a][b]['ratio'])} (rounds "
                              f"{', '.join(f'{x:.2f}' for x in vs[a][b]['runs'])})"
                              for a, b in pairs if b in vs.get(a, {})) + "."]
    return "\n".join(L)


def _max_side_table(prep: dict, s: Settings) -> str:
    n = prep["native"]
    L = [f"| records of the {n['count']} native photos | MB | photos re-encoded |", "|---|---:|---:|",
         f"| as stored | {_f(n['records_bytes'] / 1e6)} | |"]
    for z in s.sizes:
        L.append(f"| --max_side={s.max_side[z]} | {_f(n['records_ms_bytes'][str(z)] / 1e6)} | "
                 f"{n['records_ms_converted'][str(z)]} |")
    for z in s.sizes if "records_ss_bytes" in n else ():  # older runs' JSON has none
        count = n.get("records_ss_count", {}).get(str(z), n["count"])  # every photo written is re-encoded
        L.append(f"| --store_size={z} | {_f(n['records_ss_bytes'][str(z)] / 1e6)} | {count} |")
    return "\n".join(L)


def _train_block(res, tr: dict) -> str:
    L = [HEAD, SEP] + table_rows(res, "train", "step")
    for r in res:
        if r["kind"] == "train_pair" and "error" not in r["result"]:
            pp = r["result"]["paired"]
            L += ["", f"Paired, {r['name'].split(',')[0]} (one process, one-epoch fits alternating real and synthetic "
                  f"on the same model, {len(pp['ratio_runs'])} rounds): "
                  + ", ".join(f"{k} {v['images_per_s']:.1f} img/s" for k, v in pp["per_feed"].items())
                  + f"; real / synthetic {_x(pp['ratio'])} (rounds {', '.join(f'{x:.2f}' for x in pp['ratio_runs'])}), "
                  f"peak RSS {r['result']['rss_peak_mb']:.0f} MB."
                  + ("" if "startup_s" not in pp["per_feed"]["real"] else
                     " Timed: the steps after each fit's first batch; that first batch (a new iterator: "
                     "shuffle buffer filled, first decodes) took "
                     + ", ".join(f"{k} {v['startup_s']:.2f} s" for k, v in pp["per_feed"].items())
                     + ", paid once per real epoch.")]
    L.append("")
    L += [f"- {k}: {_x(v)}" for k, v in tr.items() if "oneDNN" not in k]
    head = find(res, "train", "step", startswith="stage 1 head on cached")
    if head:
        L.append(f"- feature extraction for the cache: {_f(head['extract_images_per_s'])} img/s "
                 f"(runs {', '.join(f'{x:.0f}' for x in head['extract_runs'])}); a head epoch over cached features "
                 f"runs at {_f(head['images_per_s'], 0)} img/s.")
    return "\n".join(L)


def _cores(v: float) -> str:
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def _gpu_block(g: dict) -> str:
    keys = list(dict.fromkeys(k for b in g["backbones"].values() for k in b["cores"]))
    L = ["| backbone (input size) | H100 train img/s (est.) | H100 inference img/s (est.) | 1-core rate at | "
         + " | ".join(f"cores, train / inference: {k}" for k in keys) + " |",
         "|---|---:|---:|---:|" + "---:|" * len(keys)]
    for name, b in g["backbones"].items():
        cells = [f"{_cores(b['cores'][k]['train'])} / {_cores(b['cores'][k]['infer'])}" if k in b["cores"] else "n/a"
                 for k in keys]
        L.append(f"| {name} ({b['size']}) | {b['h100_train_est']:,.0f} | {b['h100_infer_est']:,.0f} | "
                 f"{b['rate_size']} px | " + " | ".join(cells) + " |")
    def label(k: str, size: str) -> str:
        return k.replace("--max_side", f"--max_side={g['max_side'][size]}").replace("--store_size",
                                                                                   f"--store_size={size}")

    rates = "; ".join(f"{size} px: " + ", ".join(f"{label(k, size)} {v:.0f} img/s" for k, v in r.items() if v)
                      for size, r in g["per_core_decode"].items())
    return "\n".join(L + ["", f"1-core decode_resize rates measured here: {rates or 'n/a'} (kaggle200 derived from "
                           "its 2-core ratio to native in section 1)."])


def sections_of(data: dict) -> tuple[str, ...]:
    """The sections a run measured (JSON of older runs: the sections of its rows)."""
    ran = data.get("sections") or {r["section"] for r in data["rows"]}
    return tuple(x for x in SECTIONS if x in ran)


def blocks(data: dict) -> list[Block]:
    """Every generated block of this run's data, in document order; a section that did not
    run has no blocks."""
    s = Settings.from_dict(data["settings"])
    res, ratios, ran = current(data["rows"]), data["ratios"], set(sections_of(data))
    S1 = "1. Input pipeline: shards -> batched float images (no model)"
    out = [Block("run", "", None, _run_block(data, s))]
    if "pipeline" in ran:
        out.append(Block("headline-pipeline", "Headline ratios", None, _headline_pipeline(ratios)))
    if "train" in ran:
        out.append(Block("headline-train", "Headline ratios", None, _headline_train(ratios["train"])))
    if "pipeline" in ran:
        for t in dict.fromkeys(r["table"] for r in res if r["section"] == "pipeline"):
            ds, size = t.split()
            label = "kaggle_native" if ds == "native" else "kaggle200"
            out.append(Block(f"pipeline-{ds}-{size}", S1, f"{label}, {size}x{size}", _pipeline_table(res, ratios, t)))
        out.append(Block("max-side", S1, "Records with --max_side and --store_size", _max_side_table(data["prep"], s)))
    if "train" in ran:
        out.append(Block("train-step", "2. Training step", None, _train_block(res, ratios["train"])))
    if ran & {"train", "infer"}:
        onednn = [HEAD, SEP] + table_rows(res, "train", "onednn") + table_rows(res, "infer", "onednn") + [""]
        onednn += [f"- {k}: {_x(v)}" for k, v in list(ratios["train"].items()) + list(ratios["infer"].items())
                   if "oneDNN" in k]
        out.append(Block("onednn", "2. Training step", "TF_ENABLE_ONEDNN_OPTS", "\n".join(onednn)))
    if "infer" in ran:
        out.append(Block("infer", "3. Inference", None, "\n".join([HEAD, SEP] + table_rows(res, "infer", "models"))))
    if "build" in ran:
        out.append(Block("build", "4. Records build", None, "\n".join([HEAD, SEP] + table_rows(res, "build", "build"))))
    if "scale" in ran:
        scale = [HEAD, SEP] + table_rows(res, "scale", "mirrored")
        scale += table_rows(res, "scale", "native cores")
        scale += [""] + [f"- {k}: {_x(v)}" for k, v in ratios["scale"].items()]
        S5 = "5. Scaling (CPU stand-in for GPUs)"
        out.append(Block("scale", S5, None, "\n".join(scale)))
        out.append(Block("gpu", S5, "Estimate: one H100 (ESTIMATES, not measurements)", _gpu_block(data["gpu"])))
    return out


def failed_rows(data: dict) -> list[str]:
    return [f"- {r['section']} | {r['table']} | {r['name']}: {r['result']['error'][:300]}"
            for r in current(data["rows"]) if "error" in r["result"]]
