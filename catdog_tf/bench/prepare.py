"""The data every row reads, made once per run in a child process (records.build imports
TensorFlow, which the parent never does): symlink folders, records, a zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from catdog_tf.bench.measure import log
from catdog_tf.bench.plan import pick, Settings
from catdog_tf.config import BuildConfig
from catdog_tf.data import shards


def synthetic_photos(folder: Path, n: int, native: bool, seed: int = 0) -> list[Path]:
    """Stand-in JPEGs when the shared photos are missing: smooth random images."""
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


def _link(photos: list[Path], flat: Path, classes: Path):
    """A flat Kaggle layout (for records) and cats/ dogs/ (for the Keras loaders), as symlinks."""
    for d in (flat, classes / "cats", classes / "dogs"):
        d.mkdir(parents=True, exist_ok=True)
    for p in photos:
        for link in (flat / p.name, classes / ("cats" if p.name.lower().startswith("cat") else "dogs") / p.name):
            if not link.exists():
                link.symlink_to(p.resolve())


def _train_bytes(manifest: dict) -> int:
    return sum(sh["bytes"] for sh in manifest["splits"]["train"]["shards"])


def prepare(work: str, native: str | None, k200: str | None, settings: dict) -> dict:
    """Symlink folders, records as stored, with --max_side and with --store_size (native photos:
    one of each per image size), and a zip of the native photos.
    Nothing is copied from the shared photos. A missing folder is replaced by synthetic JPEGs."""
    s = Settings.from_dict(settings)
    prep: dict = {"work": work, "sources": {}}
    for ds, src in (("native", native), ("k200", k200)):
        base = Path(work) / ds
        if src is not None and Path(src).is_dir():
            photos = pick(Path(src), s.n_images)
            prep["sources"][ds] = str(src)
        else:
            photos = synthetic_photos(base / "synthetic", s.n_images, native=ds == "native")
            prep["sources"][ds] = f"synthetic ({src} missing)"
            log(f"{ds}: {src} not found; using {len(photos)} synthetic JPEGs")
        flat, classes = base / "flat", base / "classes"
        _link(photos, flat, classes)
        d = {"flat": str(flat), "classes": str(classes), "count": len(photos),
             "bytes": sum(p.stat().st_size for p in photos)}
        cfg = dict(val_fraction=0.0, workers=0)
        log(f"{ds}: building records of {len(photos)} photos")
        m = shards.build([str(flat)], BuildConfig(out=str(base / "records"), **cfg))
        d["records"], d["records_bytes"] = str(base / "records"), _train_bytes(m)
        d["records_ms"], d["records_ms_bytes"], d["records_ms_converted"] = {}, {}, {}
        d["records_ss"], d["records_ss_bytes"], d["records_ss_count"] = {}, {}, {}
        if ds == "native":
            for size in s.sizes:
                out = base / f"records_ms{s.max_side[size]}"
                m = shards.build([str(flat)], BuildConfig(out=str(out), max_side=s.max_side[size], **cfg))
                d["records_ms"][size], d["records_ms_bytes"][size] = str(out), _train_bytes(m)
                d["records_ms_converted"][size] = len(m["converted"])
                out = base / f"records_ss{size}"
                m = shards.build([str(flat)], BuildConfig(out=str(out), store_size=size, **cfg))
                d["records_ss"][size], d["records_ss_bytes"][size] = str(out), _train_bytes(m)
                d["records_ss_count"][size] = m["written"]  # every photo written is re-encoded
            z = base / "photos.zip"
            if not z.exists():
                with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in photos:
                        zf.write(p, f"train/{p.name}")
            d["zip"] = str(z)
        prep[ds] = d
    return prep
