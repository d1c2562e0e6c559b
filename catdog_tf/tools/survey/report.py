"""The report of an `ExploreResult`: summary.json, PNG plots and index.html (`write_report`),
and the summary lines the command line prints (`summary_lines`).

Plots use matplotlib's object API on an Agg canvas (no pyplot): writing a report neither
switches the caller's backend nor leaves figures open. They are rendered to PNG bytes in
memory; every file is written through storage.write_bytes (a URL folder: tf.io.gfile).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import posixpath
from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from PIL import Image

from catdog_tf.tools.survey.analysis import ExploreResult, PERCENTILES
from catdog_tf.tools.survey.scan import CLASSES, ImageInfo, iter_records
from catdog_tf.tools.survey.storage import as_path, is_remote, join, read_bytes, write_bytes

_CLASS_COLORS = {"cat": "#d95f02", "dog": "#1b9e77", "unlabeled": "#7570b3", "other": "#777777"}


# --------------------------------------------------------------------------- plots


def _figure(**kw: Any) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas (a renderer for _separate_boxes)
    return fig


def _save(fig: Figure, path: Any) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


def _separate_boxes(fig: Figure, groups: list[list[Any]], lim: float) -> None:
    """Move annotation boxes up or down (nearest free spot first) so that they do not overlap."""
    renderer = fig.canvas.get_renderer()

    def box(ann: Any) -> Any:  # the text box only: Annotation's own extent includes the arrow
        return Text.get_window_extent(ann, renderer).padded(6)

    steps = [0.0] + [sgn * 0.04 * k for k in range(1, 20) for sgn in (1, -1)]
    for notes in groups:
        placed = []
        for ann in notes:
            tx, ty0 = ann.xyann
            for dy in steps:
                ty = ty0 + dy * lim
                if not 0.03 * lim <= ty <= 0.97 * lim:
                    continue
                ann.xyann = (tx, ty)
                bb = box(ann)
                if not any(bb.overlaps(p) for p in placed):
                    break
            else:
                ann.xyann = (tx, ty0)  # no free spot: keep the first choice
            placed.append(box(ann))


def _plot_scatter(result: ExploreResult, path: Any) -> None:
    classes = [c for c in CLASSES if c in result.extremes]
    n = max(1, len(classes))
    fig = _figure(figsize=(6.2 * n, 5.8))
    axes = fig.subplots(1, n, squeeze=False, sharex=True, sharey=True)
    ok = [it for it in result.items if it.ok and it.width and it.height]
    wmax = max((it.width for it in ok), default=1)
    hmax = max((it.height for it in ok), default=1)
    lim = max(wmax, hmax) * 1.08
    all_notes = []
    for ax, cls in zip(axes[0], classes):
        g = [it for it in ok if it.label == cls]
        sizes = Counter((it.width, it.height) for it in g)
        uw, uh, uc = (np.array(v) for v in zip(*[(a, b, c) for (a, b), c in sizes.items()]))
        ax.scatter(uw, uh, s=np.minimum(9 * np.sqrt(uc), 600), alpha=0.45, color=_CLASS_COLORS[cls],
                   edgecolors="none")
        for ratio, name in ((1.0, "1:1"), (4 / 3, "4:3"), (3 / 4, "3:4")):
            x = np.array([0, lim])
            ax.plot(x, x / ratio, ls=":", lw=0.8, color="#999999")
            xe = min(lim, lim * ratio) * 0.97
            ax.text(xe, xe / ratio, name, fontsize=7, color="#777777", ha="right", va="bottom")
        # Annotate extremes; several extremes on one point share one box. Each box sits
        # between its point and the plot centre, aligned so that it stays inside the axes.
        at: dict[tuple[int, int], list[str]] = defaultdict(list)
        for e in result.extremes[cls]:
            at[(e["width"], e["height"])].append(f"{e['what']}: {e['id']}")
        cx, cy = 0.5 * lim, 0.45 * lim
        notes = []
        for k, ((x, y), labels) in enumerate(sorted(at.items(), key=lambda kv: kv[0][0] * kv[0][1])):
            if len(sizes) == 1:
                text = f"all {len(g):,} images: {x}x{y}"
            else:
                text = "\n".join(labels) + f"\n{x}x{y}" + (f" ({sizes[(x, y)]} images)" if sizes[(x, y)] > 1 else "")
            vx, vy = cx - x, cy - y
            norm = math.hypot(vx, vy) or 1.0
            dist = (0.16 + 0.05 * (k % 2)) * lim
            tx = min(max(x + vx / norm * dist, 0.03 * lim), 0.97 * lim)
            ty = min(max(y + vy / norm * dist, 0.03 * lim), 0.97 * lim)
            notes.append(ax.annotate(
                text, (x, y), xytext=(tx, ty), fontsize=8, multialignment="left",
                ha="left" if tx < 0.5 * lim else "right", va="bottom" if ty < 0.5 * lim else "top",
                arrowprops={"arrowstyle": "->", "color": "#333333", "lw": 0.8, "shrinkA": 0},
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#bbbbbb", "alpha": 0.9}))
        ax.set_title(f"{cls}: {len(g):,} images, {len(sizes):,} distinct size{'s' if len(sizes) != 1 else ''}")
        ax.set_xlabel("width (px)")
        ax.grid(alpha=0.25)
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_aspect("equal")
        all_notes.append(notes)
    axes[0][0].set_ylabel("height (px)")
    fig.suptitle("Image sizes per class (marker area grows with the number of images of that size; "
                 "dotted: aspect ratios; boxes name the extreme ids)", fontsize=11)
    fig.tight_layout()
    _separate_boxes(fig, all_notes, lim)
    _save(fig, path)


def _plain_log_ticks(ax: Any, lo: float, hi: float, *, aspect: bool) -> None:
    """Readable ticks (0.75, 1, 1.33 / 5, 10, 20 KiB) instead of 10^x on a log x axis."""
    if aspect:
        cand = [0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0, 4 / 3, 1.5, 2.0, 3.0, 4.0]
    else:
        cand = [m * 10.0 ** e for e in range(-1, 6) for m in (1, 2, 5)]
    ticks = [t for t in cand if lo * 0.95 <= t <= hi * 1.05] or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_hist(result: ExploreResult, path: Any, *, what: str) -> None:
    fig = _figure(figsize=(8, 4.5))
    ax = fig.subplots()
    if what == "filesize":
        vals_all = [it.nbytes / 1024 for it in result.items if it.nbytes > 0]
        xlabel, title = "file size (KiB, log scale)", "File sizes per class"
    else:
        vals_all = [it.width / it.height for it in result.items if it.ok and it.width and it.height]
        xlabel, title = "aspect ratio width / height (log scale)", "Aspect ratios per class"
    if vals_all:
        lo, hi = min(vals_all), max(vals_all)
        if hi <= lo:
            lo, hi = lo * 0.9, hi * 1.1
        bins = np.geomspace(lo, hi, 60)
        for cls in CLASSES:
            if what == "filesize":
                v = [it.nbytes / 1024 for it in result.items if it.label == cls and it.nbytes > 0]
            else:
                v = [it.width / it.height for it in result.items
                     if it.label == cls and it.ok and it.width and it.height]
            if v:
                ax.hist(v, bins=bins, histtype="step", lw=1.6, color=_CLASS_COLORS[cls],
                        label=f"{cls} (n={len(v):,}, median {np.median(v):.3g})")
        ax.set_xscale("log")
        _plain_log_ticks(ax, lo, hi, aspect=what != "filesize")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("files")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- thumbnails


def _load_bytes(items: Sequence[ImageInfo]) -> dict[str, bytes]:
    """Encoded bytes of some items (for thumbnails), by id; unreadable ones left out."""
    out: dict[str, bytes] = {}
    want_rec: dict[tuple[str, int], str] = {}
    for it in items:
        if it.path:
            try:
                out[it.id] = read_bytes(it.path)
            except OSError:
                pass
        elif it.record:
            want_rec[it.record] = it.id
    if want_rec:
        folders = {posixpath.dirname(s) if is_remote(s) else os.path.dirname(s) for s, _ in want_rec}
        for folder in folders:
            for rec in iter_records(folder):
                key = (rec["shard"], rec["index"])
                if key in want_rec:
                    out[want_rec[key]] = rec["encoded"]
    return out


def _thumb_uri(data: bytes, size: int = 96) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
h1{font-size:1.5em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.conflict{background:#ffecec} .muted{color:#777}
.group{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:0.75em} figure img{display:block;border:1px solid #ccc}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _h(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else _h(v)


def _html_counts(result: ExploreResult) -> str:
    rows = [("all", result.counts)] + list(result.counts_by_source.items())
    head = "".join(f"<th>{c}</th>" for c in (*CLASSES, "total"))
    body = "".join(f"<tr><td class=l>{_h(name)}</td>" + "".join(f"<td>{_fmt(c[k])}</td>" for k in (*CLASSES, "total"))
                   + "</tr>" for name, c in rows)
    return f"<table><tr><th class=l>source</th>{head}</tr>{body}</table>"


def _html_stats(result: ExploreResult) -> str:
    cols = [name for name, _ in PERCENTILES] + ["mean"]
    parts = []
    for metric in ("width", "height", "aspect", "megapixels", "kbytes"):
        rows = []
        for cls, st in result.stats.items():
            d = st[metric]
            rows.append(f"<tr><td class=l>{cls}</td><td>{st['n']['count']:,}</td>"
                        + "".join(f"<td>{_fmt(d.get(c, float('nan')))}</td>" for c in cols) + "</tr>")
        parts.append(f"<h3>{metric}</h3><table><tr><th class=l>class</th><th>n</th>"
                     + "".join(f"<th>{c}</th>" for c in cols) + "</tr>" + "".join(rows) + "</table>")
    return "".join(parts)


def _html_groups(groups: list[dict[str, Any]], thumbs: dict[str, str | None], limit: int, near: bool) -> str:
    if not groups:
        return "<p class=muted>none found</p>"
    rows = []
    for k, g in enumerate(groups[:limit]):
        figs = []
        for id_, lab in zip(g["ids"], g["labels"]):
            t = thumbs.get(id_)
            img = f"<img src='{t}' alt=''>" if t else ""
            figs.append(f"<figure>{img}{_h(id_)}<br><span class=muted>{lab}</span></figure>")
        info = f"max distance {g['max_distance']} bits" if near else f"{g['nbytes']:,} B<br><code>{g['sha256'][:12]}</code>"
        cls = " class=conflict" if g["label_conflict"] else ""
        flag = "<b>labels disagree</b><br>" if g["label_conflict"] else ""
        rows.append(f"<tr{cls}><td>{k + 1}</td><td class=l>{flag}{len(g['ids'])} files<br>{info}</td>"
                    f"<td class=l><div class=group>{''.join(figs)}</div></td></tr>")
    more = f"<p class=muted>{len(groups) - limit} more groups in summary.json</p>" if len(groups) > limit else ""
    return f"<table><tr><th>#</th><th class=l>group</th><th class=l>members</th></tr>{''.join(rows)}</table>{more}"


# --------------------------------------------------------------------------- report


_FILES = {"summary": "summary.json", "scatter": "sizes_scatter.png", "filesize": "filesize_hist.png",
          "aspect": "aspect_hist.png", "index": "index.html"}


def write_report(result: ExploreResult, out_dir: str | os.PathLike, *, max_groups: int = 150,
                 thumbnails: bool = True) -> dict[str, Any]:
    """Write summary.json, the PNG plots and index.html into `out_dir` (a local folder or a
    URL: gs://, hdfs://); return their paths (Paths; strings for a URL)."""
    out = as_path(out_dir)
    paths = {k: join(out, v) for k, v in _FILES.items()}
    summary = result.summary()
    write_bytes(paths["summary"], json.dumps(summary, indent=1).encode("utf-8"))
    _plot_scatter(result, paths["scatter"])
    _plot_hist(result, paths["filesize"], what="filesize")
    _plot_hist(result, paths["aspect"], what="aspect")
    thumbs = _thumbnails(result, max_groups) if thumbnails else {}
    write_bytes(paths["index"], _html_page(result, summary, thumbs, max_groups).encode("utf-8"))
    return paths


def _thumbnails(result: ExploreResult, max_groups: int) -> dict[str, str | None]:
    """Thumbnails (data: URIs) of the ids the page shows: duplicate group members and extremes."""
    shown = {id_ for g in result.duplicates[:max_groups] + result.near_duplicates[:max_groups]
             for id_ in g["ids"]}
    shown |= {e["id"] for ex in result.extremes.values() for e in ex}
    data = _load_bytes([it for it in result.items if it.id in shown])
    return {k: _thumb_uri(v) for k, v in data.items()}


def _html_extremes(result: ExploreResult, thumbs: dict[str, str | None]) -> str:
    rows = []
    for cls, ex in result.extremes.items():
        figs = []
        for e in ex:
            t = thumbs.get(e["id"])
            img = f"<img src='{t}' alt=''>" if t else ""
            figs.append(f"<figure>{img}{e['what']}: {_h(e['id'])}<br><span class=muted>{e['width']}x{e['height']}, "
                        f"aspect {e['aspect']}</span></figure>")
        rows.append(f"<tr><td class=l>{cls}</td><td class=l><div class=group>{''.join(figs)}</div></td></tr>")
    return "".join(rows)


def _html_undecodable(result: ExploreResult) -> str:
    und = "".join(f"<tr><td class=l>{_h(u['id'])}</td><td class=l>{_h(u['kind'])}</td><td>{u['nbytes']:,}</td>"
                  f"<td class=l>{_h(u['reason'])}</td><td class=l><code>{_h(u['path'])}</code></td></tr>"
                  for u in result.undecodable)
    if not und:
        return "<p class=muted>none</p>"
    return ("<table><tr><th class=l>id</th><th class=l>kind</th><th>bytes</th><th class=l>reason</th>"
            "<th class=l>path</th></tr>" + und + "</table>")


def _html_page(result: ExploreResult, summary: dict[str, Any], thumbs: dict[str, str | None],
               max_groups: int) -> str:
    lc = summary["label_conflicts"]
    n_dup_files = sum(len(g["ids"]) for g in result.duplicates)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>catdog_tf explore</title>
<style>{_CSS}</style></head><body>
<h1>Data exploration</h1>
<p>Sources: {', '.join(f'<code>{_h(s)}</code>' for s in result.sources)}<br>
{len(result.items):,} files, {summary['n_decoded']:,} decoded, {len(result.undecodable)} undecodable;
scanned in {result.seconds:.1f} s ({result.files_per_s:,.0f} files/s, {result.params.get('workers')} workers).<br>
Exact duplicates: {len(result.duplicates)} groups ({n_dup_files} files, {lc['duplicates']} with cat/dog labels disagreeing).
Near-duplicates (pHash Hamming distance &le; {result.params['near_dup_threshold']} of 64 bits, exact copies merged):
{len(result.near_duplicates)} groups ({lc['near_duplicates']} with labels disagreeing).</p>
<h2>Counts</h2>{_html_counts(result)}
<h2>Image sizes</h2>
<img class=plot src="{_FILES['scatter']}" alt="width/height scatter per class">
<h3>Extremes</h3><table><tr><th class=l>class</th><th class=l>smallest / largest (pixels), widest / tallest
(aspect)</th></tr>{_html_extremes(result, thumbs)}</table>
{_html_stats(result)}
<img class=plot src="{_FILES['aspect']}" alt="aspect ratio histogram">
<h2>File sizes</h2>
<img class=plot src="{_FILES['filesize']}" alt="file size histogram">
<h2>Exact duplicates (sha256)</h2>{_html_groups(result.duplicates, thumbs, max_groups, near=False)}
<h2>Near-duplicates (pHash &le; {result.params['near_dup_threshold']})</h2>
{_html_groups(result.near_duplicates, thumbs, max_groups, near=True)}
<h2>Undecodable files</h2>
{_html_undecodable(result)}
<p class=muted>Machine-readable: <a href="summary.json">summary.json</a></p>
</body></html>
"""


def summary_lines(result: ExploreResult, paths: dict[str, Any]) -> list[str]:
    """What `python -m catdog_tf.explore` prints: counts, sizes, duplicates, undecodable files."""
    s = result.summary()
    lines = [f"{s['n_files']:,} files in {result.seconds:.1f} s ({result.files_per_s:,.0f} files/s)",
             "counts: " + ", ".join(f"{k} {v:,}" for k, v in s["counts"].items())]
    if "all" in s["stats"]:
        st = s["stats"]["all"]
        lines.append(f"size: width {st['width']['min']:.0f}..{st['width']['median']:.0f}..{st['width']['max']:.0f}, "
                     f"height {st['height']['min']:.0f}..{st['height']['median']:.0f}..{st['height']['max']:.0f} "
                     "(min..median..max)")
    lines.append(f"exact duplicate groups: {len(s['duplicates'])} "
                 f"({s['label_conflicts']['duplicates']} with cat/dog labels disagreeing)")
    lines.append(f"near-duplicate groups (pHash <= {s['params']['near_dup_threshold']}): {len(s['near_duplicates'])} "
                 f"({s['label_conflicts']['near_duplicates']} with cat/dog labels disagreeing)")
    lines.append(f"undecodable: {len(s['undecodable'])}")
    lines += [f"  {u['id']}: {u['reason']}" for u in s["undecodable"][:20]]
    if s["warnings"]:
        lines.append(f"warnings: {len(s['warnings'])} (first: {s['warnings'][0]['id']}: {s['warnings'][0]['warning']})")
    lines.append(f"report: {paths['index']}")
    return lines
