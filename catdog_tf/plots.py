"""Pictures for people: contact sheets and calibration plots (PNG, via matplotlib Agg).

Figures are rendered to PNG bytes in memory and written through catdog_tf.files, so a report
folder may be local or remote (gs://, hdfs://); photos given by path are read the same way.
"""

from __future__ import annotations

import io

import numpy as np

from catdog_tf import files


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _open(src):
    from PIL import Image

    im = Image.open(io.BytesIO(src if isinstance(src, (bytes, bytearray)) else files.read_bytes(src)))
    im.draft("RGB", (256, 256))  # fast reduced JPEG decode for thumbnails
    return im.convert("RGB")


def contact_sheet(items: list[tuple[object, str]], out_png: str, title: str = "", cols: int = 6,
                  colors: list[str] | None = None) -> str | None:
    """items: (image path or bytes, caption). Writes one PNG grid; returns its path."""
    if not items:
        files.remove(out_png)  # an earlier run's sheet must not pass for this one's
        return None
    plt = _plt()
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0 + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (src, caption) in enumerate(items):
        ax = axes.flat[k]
        try:
            ax.imshow(_open(src))
        except Exception as e:  # noqa: BLE001 - show the broken file instead of failing the sheet
            ax.text(0.5, 0.5, f"unreadable\n{type(e).__name__}", ha="center", va="center")
        ax.set_title(caption, fontsize=8, color=(colors[k] if colors else "black"))
    if title:
        fig.suptitle(title, fontsize=12)
    # Leave the title its own strip: tight_layout alone lets the first row's captions run into it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    _save(plt, fig, out_png, dpi=80)
    return out_png


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability table: per P(dog) bin, mean prediction, observed dog rate, count."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "mean_p": float(p[m].mean()),
                        "dog_rate": float(y[m].mean()), "count": int(m.sum())})
    return out


def calibration_plot(y: np.ndarray, p: np.ndarray, out_png: str, title: str = "") -> str:
    plt = _plt()
    table = calibration(y, p)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    a.plot([0, 1], [0, 1], "--", color="gray", label="perfect")
    a.plot([t["mean_p"] for t in table], [t["dog_rate"] for t in table], "o-", label="model")
    for t in table:
        a.annotate(str(t["count"]), (t["mean_p"], t["dog_rate"]), fontsize=7, xytext=(4, -10), textcoords="offset points")
    a.set(xlabel="predicted P(dog)", ylabel="observed fraction of dogs", title="calibration (n per bin)")
    a.legend()
    b.hist([p[y == 0], p[y == 1]], bins=40, label=["cats", "dogs"], color=["tab:orange", "tab:blue"], log=True)
    b.set(xlabel="predicted P(dog)", ylabel="images (log)", title="predictions by true class")
    b.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(plt, fig, out_png, dpi=90)
    return out_png


def _save(plt, fig, out_png: str, dpi: int) -> None:
    """The figure as PNG bytes, written (atomically, parent folders made) through catdog_tf.files."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    files.write_bytes(out_png, buf.getvalue())
