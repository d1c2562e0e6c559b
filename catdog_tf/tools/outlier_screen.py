"""Outlier screen: training photos that an ImageNet classifier sees no cat or dog in.

    python -m catdog_tf.outliers --images=../shared/data/kaggle200/train --out=reports/outliers --top_n=30

A candidate is an image whose top-N ImageNet classes hold no cat class (281-285) and no
dog class (151-268). Its score is the summed cat + dog probability (low = surely no
animal), so candidates can be ranked. Label conflicts (a confident dog on a cat. file, or
the reverse) are the other kind of outlier and are flagged too.

Writes OUT/candidates.csv, OUT/contact_sheet-*.png + OUT/index.html for human review, and
OUT/exclude.txt: the flagged ids in the format `records --exclude` reads. Review it (delete
the lines of photos that are fine) before building records with it. OUT may be local or
remote (gs://, hdfs://): every file goes through catdog_tf.files.
"""

from __future__ import annotations

import csv
import html
import io
import json
import sys

import numpy as np

from catdog_tf import files, plots
from catdog_tf.config import OutliersConfig
from catdog_tf.data import manifest, pipeline
from catdog_tf.errors import UserError
from catdog_tf.inference import predictor
from catdog_tf.models import imagenet, registry
from catdog_tf.progress import Progress


def screen(probs: np.ndarray, labels: np.ndarray, top_n: int = 30, conflict: float = 0.8) -> dict:
    """probs: [n, 1000] ImageNet softmax; labels 0 cat / 1 dog. Returns boolean masks and scores."""
    order = np.argsort(-probs, axis=1)[:, :top_n]
    is_cat = np.isin(order, imagenet.CAT_CLASSES)
    is_dog = np.isin(order, imagenet.DOG_CLASSES)
    no_animal = ~(is_cat | is_dog).any(axis=1)
    p_cat, p_dog = imagenet.cat_dog_probs(probs)
    labels = np.asarray(labels)
    # A confident opposite group: mostly-dog probability on a cat file or vice versa.
    conflict_mask = ((labels == 0) & (p_dog >= conflict) & (p_dog > 10 * p_cat)) | \
                    ((labels == 1) & (p_cat >= conflict) & (p_cat > 10 * p_dog))
    return {"no_animal": no_animal, "label_conflict": conflict_mask & ~no_animal,
            "score": p_cat + p_dog, "p_cat": p_cat, "p_dog": p_dog}


def _check_unreviewed(out: str) -> None:
    """exclude.txt is meant to be edited by hand: a rerun must not replace a reviewed list. The
    summary records the sha256 of the list this tool wrote; another content is a person's review."""
    path, summary = files.join(out, "exclude.txt"), files.join(out, "summary.json")
    if not files.exists(path):
        return
    s = files.read_json(summary, "outliers summary") if files.exists(summary) else None
    written = s.get("exclude_sha256") if isinstance(s, dict) else None
    if written != files.sha256_file(path):
        raise UserError(f"{path}: edited since this tool wrote it (a review?); move it away or give another --out")


def run(cfg: OutliersConfig) -> dict:
    out, backbone, top_n = cfg.out, cfg.backbone, cfg.top_n
    _check_unreviewed(out)
    model = registry.build_backbone(backbone, weights=cfg.weights, include_top=True)
    size = int(model.input_shape[1])
    if cfg.images:
        ids, labels, skipped, batches, sources = _photo_batches(cfg.images, size, cfg.batch_size)
    else:
        ids, labels, skipped, batches, sources = _record_batches(cfg.records, size, cfg.batch_size)
    # A records generator fills ids and labels as it goes: its total is unknown up front.
    probs = _predict(model, batches, len(ids) if cfg.images else None, f"{backbone} ImageNet screen")
    labels = np.asarray(labels)
    s = screen(probs, labels, top_n, cfg.conflict)
    flagged = np.flatnonzero(s["no_animal"] | s["label_conflict"])
    flagged = flagged[np.argsort(s["score"][flagged])]  # surest non-animals first
    if sources is None:
        want = {ids[i] for i in flagged}
        sources = {e["id"]: e["encoded"] for e in manifest.read_examples(cfg.records) if e["id"] in want}

    files.makedirs(out)
    top5 = imagenet.decode_predictions(probs[flagged], top=5) if len(flagged) else []
    _write_candidates(out, ids, labels, s, flagged, top5)
    _write_exclude(out, ids, s, flagged, top5, backbone, top_n)
    pages, sheet_ids = _write_contact_sheets(out, ids, s, flagged, top5, sources, backbone, top_n, cfg.per_page)
    _write_index(out, pages, len(ids), len(flagged), backbone, top_n)
    # How the candidate count depends on N, from the same predictions (the reference used 30).
    by_n = {str(n): int(screen(probs, labels, n, cfg.conflict)["no_animal"].sum()) for n in (1, 3, 5, 10, 30, 100)}
    summary = {"backbone": backbone, "top_n": top_n, "screened": len(ids), "flagged": len(flagged),
               "no_animal_by_top_n": by_n,
               "no_animal": int(s["no_animal"].sum()), "label_conflict": int(s["label_conflict"].sum()),
               "skipped": skipped, "ids": [ids[i] for i in flagged],
               "contact_sheets": [{"file": files.name(p), "ids": i} for p, i in zip(pages, sheet_ids)],
               "exclude_sha256": files.sha256_file(files.join(out, "exclude.txt"))}
    files.write_text(files.join(out, "summary.json"), json.dumps(summary, indent=1))
    print(f"outliers: {len(flagged)} of {len(ids)} flagged ({summary['no_animal']} no cat/dog in top {top_n}, "
          f"{summary['label_conflict']} label conflicts) -> {files.join(out, 'candidates.csv')}", file=sys.stderr)
    return summary


def _photo_batches(images: str, size: int, batch_size: int):
    """(ids, labels, skipped, image batches, {id: file path}) of a photo folder."""
    photos = predictor.scan_folder(images, labeled=True)
    for s in photos.skipped:
        print(f"skip {s['file']}: {s['reason']}", file=sys.stderr)
    batches = pipeline.photos_dataset(photos.items, size, batch_size)
    return photos.ids, photos.labels, photos.skipped, batches, dict(zip(photos.ids, photos.paths))


def _record_batches(records_dir: str, size: int, batch_size: int):
    """(ids, labels, skipped, image batches, None) of a records folder's labeled splits. ids and
    labels fill as the batches are drawn; the flagged photos' bytes are read afterwards, so the
    sources are None."""
    m = manifest.load_manifest(records_dir)
    ids, labels = [], []
    splits = sorted(s for s in m["splits"] if s != "test")
    ds = None
    for split in splits:
        d = pipeline.make_dataset(records_dir, split, size, batch_size, pipeline.Read(with_ids=True))
        ds = d if ds is None else ds.concatenate(d)

    def gen():
        for x, y in ds:
            ids.extend(i.decode() for i in x["id"].numpy())
            labels.extend(int(v) for v in y.numpy())
            yield x["image"]

    return ids, labels, [], gen(), None


def _predict(model, batches, total, desc: str) -> np.ndarray:
    """[n, 1000] ImageNet probabilities of the batches."""
    chunks = []
    bar = Progress(total, desc)
    for x in batches:
        chunks.append(model(x, training=False).numpy().astype(np.float64))
        bar.update(len(chunks[-1]))
    return np.concatenate(chunks) if chunks else np.zeros((0, 1000))


def _write_candidates(out: str, ids, labels, s: dict, flagged, top5) -> None:
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["id", "label", "score", *[c for k in range(1, 6) for c in (f"top{k}", f"p{k}")],
                "p_cat", "p_dog", "reason"])
    for i, t5 in zip(flagged, top5):
        reason = "no_animal" if s["no_animal"][i] else "label_conflict"
        w.writerow([ids[i], "dog" if labels[i] == 1 else "cat", f"{s['score'][i]:.5f}",
                    *[v for _, name, p in t5 for v in (name, f"{p:.4f}")],
                    f"{s['p_cat'][i]:.5f}", f"{s['p_dog'][i]:.5f}", reason])
    files.write_text(files.join(out, "candidates.csv"), table.getvalue())


def _write_exclude(out: str, ids, s: dict, flagged, top5, backbone: str, top_n: int) -> None:
    exclude = [f"# outlier candidates from {backbone}, top_n={top_n}: REVIEW, delete lines of photos that are fine,\n"
               f"# then: python -m catdog_tf.records --exclude={files.join(out, 'exclude.txt')} ...\n"]
    for i, t5 in zip(flagged, top5):
        reason = "no cat/dog in top-N" if s["no_animal"][i] else "label conflict"
        exclude.append(f"{ids[i]}  # {reason}; {t5[0][1]} {t5[0][2]:.2f}\n")
    files.write_text(files.join(out, "exclude.txt"), "".join(exclude))


def _write_contact_sheets(out: str, ids, s: dict, flagged, top5, sources: dict, backbone: str, top_n: int,
                          per_page: int) -> tuple[list, list]:
    """Pages of flagged photos, `per_page` each; returns their paths and the ids on each."""
    for old in files.glob(files.join(out, "contact_sheet-*.png")):  # an earlier run's pages
        files.remove(old)
    pages, sheet_ids = [], []
    for k in range(0, len(flagged), per_page):
        chunk = list(zip(flagged[k:k + per_page], top5[k:k + per_page]))
        items = [(sources[ids[i]], f"{ids[i]} ({'no animal' if s['no_animal'][i] else 'conflict'})\n"
                  f"{t5[0][1][:22]} {t5[0][2]:.2f}\n{t5[1][1][:22]} {t5[1][2]:.2f}") for i, t5 in chunk]
        colors = ["firebrick" if s["no_animal"][i] else "darkorange" for i, _ in chunk]
        pages.append(plots.contact_sheet(items, files.join(out, f"contact_sheet-{k // per_page + 1:02d}.png"),
                                          f"outlier candidates {k + 1}-{k + len(chunk)} of {len(flagged)} "
                                          f"({backbone}, top {top_n})", colors=colors))
        sheet_ids.append([ids[i] for i, _ in chunk])
    return pages, sheet_ids


def _write_index(out: str, pages, screened, flagged, backbone, top_n):
    imgs = "\n".join(f'<p><img src="{html.escape(files.name(p))}" style="max-width:100%"></p>' for p in pages)
    files.write_text(files.join(out, "index.html"),
        f"<!doctype html><meta charset=utf-8><title>Outlier candidates</title>"
        f"<h1>Outlier candidates: {flagged} of {screened}</h1>"
        f"<p>{html.escape(backbone)}, top {top_n}. Red: no cat/dog class in the top {top_n}; orange: label "
        f"conflict. Review, then edit <code>exclude.txt</code> and pass it to "
        f"<code>python -m catdog_tf.records --exclude</code>. Details: <a href=candidates.csv>candidates.csv</a>.</p>"
        f"{imgs}\n")
