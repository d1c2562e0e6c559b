"""Data exploration for Kaggle-layout cat/dog folders (or a records folder of TFRecord shards).

    python -m catdog_tf.explore --images=../shared/data/kaggle_native/train --out=reports/explore

What it reports (see `explore_folder` / `explore_records` for the notebook API):

* counts per class, by the Kaggle name rules of `catdog_tf.data.kaggle`: ``cat.N.jpg`` -> cat,
  ``dog.N.jpg`` -> dog, ``N.jpg`` -> unlabeled, anything else -> other (for records the
  label the record format, `catdog_tf.data.schema`, carries decides);
* image size statistics (width, height, aspect = width / height, megapixels, file bytes)
  per class, a width/height scatter plot per class with the extreme ids named, and
  file-size and aspect-ratio histograms;
* exact duplicates (same sha256 of the file bytes) and near-duplicates (64-bit perceptual
  hash, Hamming distance <= threshold), as groups of ids; groups whose members carry both
  the cat and the dog label are flagged ``label_conflict``;
* undecodable files (empty, not an image, truncated, other decode errors, records that do
  not parse) with the reason. Reading never raises on bad input: every error becomes a row
  of ``undecodable``.

Output folder: ``index.html`` (tables, plots, inline thumbnails of duplicate groups),
``summary.json`` (machine-readable) and the PNG plots.

Modules: `scan` (listing, hashing, per-file and per-record analysis, the process pool),
`analysis` (counts, size statistics, extremes, duplicates; `explore_folder`,
`explore_records`), `report` (`write_report`, `summary_lines`), `storage` (local and URL
paths). Exploring a local image folder never imports TensorFlow; only the records path and
URL paths (gs://, hdfs://, read and written through tf.io.gfile) do.
"""

from catdog_tf.tools.survey.analysis import (
    DEFAULT_NEAR_DUP_THRESHOLD,
    ExploreResult,
    analyze,
    count_classes,
    explore_folder,
    explore_records,
    find_exact_duplicates,
    find_near_duplicates,
    hash_pairs,
    size_extremes,
    size_stats,
)
from catdog_tf.tools.survey.report import summary_lines, write_report
from catdog_tf.tools.survey.scan import (
    CLASSES,
    ImageInfo,
    analyze_bytes,
    classify_name,
    hamming,
    iter_records,
    list_image_files,
    phash,
    record_shards,
    scan_images,
    scan_records,
)

__all__ = [
    "CLASSES", "DEFAULT_NEAR_DUP_THRESHOLD", "ExploreResult", "ImageInfo", "analyze", "analyze_bytes",
    "classify_name", "count_classes", "explore_folder", "explore_records", "find_exact_duplicates",
    "find_near_duplicates", "hamming", "hash_pairs", "iter_records", "list_image_files", "phash",
    "record_shards", "scan_images", "scan_records", "size_extremes", "size_stats", "summary_lines",
    "write_report",
]
