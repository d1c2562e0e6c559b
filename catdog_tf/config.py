"""Every tool's settings, with their defaults and help, in one place.

Library functions take these dataclasses (a notebook builds one directly); the command-line
flags are generated from them (catdog_tf.cli), so a default is written once, here.
Field metadata: `help` (the flag's help), `choices` (an enum flag), `multi` (a repeatable flag).
"""

from __future__ import annotations

import dataclasses
import math
import os
import posixpath

from catdog_tf import localio
from catdog_tf.fields import Checked, f, unread

AUGMENTATIONS = ("none", "flip", "reference", "randaugment")
BATCH_POLICIES = ("none", "mixup", "cutmix")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
AUTO_ON_OFF = ("auto", "on", "off")
SCHEDULES = ("plateau", "cosine")  # training/recipe.py says what each does
TTA = ("none", "flip")
# How a feature map becomes the head's input: average, GeM or flattened (models/head.py).
POOLINGS = ("avg", "gem", "flatten")
GEM_P = 2.0  # GeM's exponent: RESULTS.md experiment 35; 2 also has an exact standard-Keras form (inference/serving.py)
NO_WEIGHTS = (None, "none")  # --weights values that leave the backbone random
MAX_PIXELS = 50_000_000  # ~7000x7000; anything larger is almost surely not a pet photo
MAX_BATCH = 4096  # 4096 photos at 300 px are 4.4 GB of float32 input before any activation


def weights_field():
    return f("auto", "Backbone weights: auto (the registry's source), imagenet, none (random) or PATH to a "
                     "weights file.")


def batch_field(default: int):
    # One meaning everywhere: the photos (or feature rows) of one step in total, split across
    # the devices (tf.distribute's global batch).
    return f(default, "Batch size: one step's photos (or feature rows) in total; with several devices, split "
                      "across them.", ge=1, le=MAX_BATCH)


def default_cache_dir(out: str) -> str:
    """Feature caches live beside the run folders (runs/cache for runs/X), shared by every tool;
    gs://b/runs/X -> gs://b/runs/cache (string rules only: config imports no TensorFlow)."""
    out = str(out)
    if "://" in out:  # a URL (gs://, hdfs://, ram://): normpath would fold the scheme's '//'
        scheme, _, rest = out.partition("://")
        parent = posixpath.dirname(rest.rstrip("/"))
        return f"{scheme}://{posixpath.join(parent, 'cache') if parent else rest.rstrip('/') + '/cache'}"
    return os.path.join(os.path.dirname(os.path.normpath(out)) or ".", "cache")


@dataclasses.dataclass
class BuildConfig(Checked):
    out: str = f("records", "Output folder for shards and manifest.json.")
    val_fraction: float = f(0.1, "Fraction of each class held out for validation.", ge=0, lt=1)
    folds: int = f(0, "K >= 2: assign every labeled image to one of K folds instead.", ge=0, le=1000)
    seed: int = f(0, "Split seed.", ge=0, lt=2**32)
    exclude: str | None = f(None, "File of ids kept out of training (one per line, # comments); they stay in their "
                            "split or fold, so evaluation still scores them.")
    max_side: int | None = f(None, "Store a re-encoding downscaled to this longest side.", ge=1)
    store_size: int | None = f(None, "Store every photo re-encoded at exactly SIZE x SIZE (antialiased, JPEG with "
                               "full-resolution chroma): the fastest input for models of input size SIZE; the "
                               "original bytes are not kept.", ge=1)
    strict: bool = f(False, "Exit non-zero if any file was skipped.")
    max_pixels: int = f(MAX_PIXELS, "Skip images with more pixels than this.", ge=1)
    max_file_mb: float = f(localio.MAX_PHOTO_BYTES / 2**20, "Skip files larger than this (no pet photo is; a "
                           "bigger one is a mistake).", gt=0)
    shard_mb: float = f(100.0, "Target shard size in MB.", ge=0.01)
    min_shards: int = f(8, "At least this many shards per split (when it has >= 256 photos a shard).", ge=1, le=10_000)
    workers: int = f(0, "Reader/writer threads (0: one per core).", ge=0, le=256)
    jpeg_quality: int = f(95, "JPEG quality of re-encoded photos.", ge=1, le=100)

    def ignored(self):
        return unread(["val_fraction"], "with --folds the photos go to folds, not to a validation split") \
            if self.folds else {}

    def relations(self):
        if self.folds == 1:
            return "--folds=1: must be 0 (a train/validation split) or at least 2"
        if self.store_size is not None and self.max_side:
            return "--store_size and --max_side exclude each other: give one"
        if self.store_size is not None and self.store_size ** 2 > self.max_pixels:
            return (f"--store_size={self.store_size}: must be at most {math.isqrt(self.max_pixels)} "
                    f"(--max_pixels={self.max_pixels})")
        return None


@dataclasses.dataclass
class TrainConfig(Checked):
    backbone: str = f("efficientnet_lite0", "Backbone name (python -m catdog_tf.backbones lists them).")
    weights: str | None = weights_field()
    records: str = f("records", "Folder of shards + manifest.json (python -m catdog_tf.records).")
    out: str = f("runs/model", "Output folder: model.keras, saved_model/, metrics, TensorBoard logs.")
    image_size: int | None = f(None, "Input size (default: the backbone's own).", ge=16, le=2048)
    batch_size: int = batch_field(32)
    epochs1: int = f(10, "Stage 1 (head) epochs.", ge=0)
    epochs2: int = f(5, "Stage 2 (top blocks) epochs; 0 skips stage 2.", ge=0)
    lr1: float = f(1e-3, "Stage 1 learning rate.", gt=0, le=10)
    lr2: float = f(1e-5, "Stage 2 learning rate.", gt=0, le=10)
    unfreeze_blocks: int = f(2, "Top blocks of the backbone trained in stage 2.", ge=0)
    dropout: float = f(0.2, "Dropout before the sigmoid unit.", ge=0, lt=1)
    pooling: str = f("avg", "Pooling of the last feature map.", choices=POOLINGS)
    augmentation: str = f("reference", "Augmentation policy of full-image stages.", choices=AUGMENTATIONS)
    head_augmentation: str = f("flip", "Stage 1 augmentation; none/flip use the cached-feature fast path.",
                               choices=AUGMENTATIONS)
    stage2_cache: str = f("auto", "Train stage 2 on cached activations of the frozen bottom (auto: on without "
                          "a GPU; flips only).", choices=AUTO_ON_OFF)
    batch_policy: str = f("none", "MixUp/CutMix on full-image stages.", choices=BATCH_POLICIES)
    mixed_precision: str = f("auto", "float16 compute (auto: GPUs with tensor cores only).", choices=AUTO_ON_OFF)
    xla: str = f("auto", "jit_compile the step (auto: a single GPU only).", choices=AUTO_ON_OFF)
    strategy: str = f("auto", "tf.distribute strategy.", choices=STRATEGIES)
    fold: int | None = f(None, "Cross-validation fold (records built with --folds).", ge=0)
    train_split: str = f("train", "Records split(s) to train on ('+' joins splits, e.g. fold2+fold3).")
    val_split: str = f("validation", "Records split for early stopping, the LR schedule and the reported figure "
                       "('none': train without one).")
    seed: int = f(0, "Random seed.", ge=0, lt=2**32)
    patience: int = f(6, "EarlyStopping patience (epochs).", ge=1)
    cache_dir: str | None = f(None, "Feature cache folder (default: <out>/../cache).")
    profile_batches: str | None = f(None, "TensorBoard profiler window, e.g. '10,20' (the trace shows in "
                                    "TensorBoard's Profile tab with the `profile` extra: pip install -e '.[profile]').")
    label_smoothing: float = f(0.0, "Label smoothing of the log loss.", ge=0, lt=1)
    schedule: str = f("plateau", "Learning-rate schedule of both stages: plateau (lower the rate when validation "
                      "stalls, stop early) or cosine (warm-up, then cosine decay to 0 over the epochs; no early "
                      "stopping).", choices=SCHEDULES)
    warmup_epochs: float = f(0.0, "With --schedule=cosine: epochs of linear warm-up from 0.", ge=0)
    weight_decay: float = f(0.0, "Decoupled weight decay (AdamW; 0: Adam).", ge=0, lt=1)
    soft_targets: list[str] | None = f(None, "Distillation: train on a teacher's P(dog) instead of the labels: "
                                       "out-of-fold files (runs/final/oof_predictions.csv) and submission files "
                                       "(id,label) for unlabeled photos, e.g. the test split's; repeatable. Every "
                                       "training photo needs one; validation still scores the labels.", multi=True)
    steps_per_epoch: int | None = f(None, "Limit full-image epochs to this many steps.", ge=1)
    log_every: int = f(20, "TensorBoard: loss, learning rate and steps/s every this many steps.", ge=1)

    def ignored(self):
        out = unread(["warmup_epochs"], "the plateau schedule has no warm-up") if self.schedule == "plateau" else {}
        if self.epochs2 == 0:
            out.update(unread(["lr2", "unfreeze_blocks", "stage2_cache"], "--epochs2=0: there is no stage 2"))
        return out

    def relations(self):
        if self.soft_targets and self.batch_policy != "none":
            return f"--batch_policy={self.batch_policy} mixes the labels, not --soft_targets: use one of them"
        if self.epochs1 == 0 and (self.epochs2 == 0 or self.unfreeze_blocks == 0):
            return "--epochs1=0 and no stage 2 (--epochs2 or --unfreeze_blocks is 0): nothing would be trained"
        if self.profile_batches:
            a, _, b = self.profile_batches.partition(",")
            if not (a.strip().isdigit() and b.strip().isdigit() and 1 <= int(a) <= int(b)):
                return f"--profile_batches={self.profile_batches}: must be FIRST,LAST batch numbers, 1 <= FIRST <= LAST"
        return None


FINETUNE_ONLY = ("finetune_epochs", "finetune_lr", "warmup_epochs", "weight_decay")


@dataclasses.dataclass
class KFoldConfig(Checked):
    backbone: str = f("efficientnet_lite0", "Registry name, or names joined with + to fuse their features "
                      "(each may carry its own input size: efficientnet_lite1@300+efficientnet_lite2@380).")
    records: str = f("records", "Records folder built with --folds.")
    out: str | None = f(None, "Output folder (default runs/kfold/<backbone>).")
    folds: list[str] | None = f(None, "Folds to cross-validate over (default: all); others stay untouched.",
                                  distinct=True)
    image_size: int | None = f(None, "Input size (default: the backbone's own; a single backbone only).", ge=16,
                               le=2048)
    weights: str | None = weights_field()
    epochs: int = f(20, "Epochs per fold head (fixed: no early stopping, so out-of-fold stays honest).", ge=1)
    lr: float = f(1e-3, "Peak Adam learning rate (cosine decay to 0).", gt=0, le=10)
    dropout: float = f(0.3, "Dropout on the pooled features.", ge=0, lt=1)
    batch_size: int = batch_field(64)
    pooling: str = f("avg", f"Pooling of each backbone's last feature map: avg, or gem (GeM, p = {GEM_P:g}; its "
                     "members carry no ImageNet masses, so no hedge).", choices=POOLINGS[:2])
    head: str = f("adam", "How each fold head is fit: adam (the cosine recipe: --epochs, --lr, --dropout, "
                  "--batch_size) or lbfgs (L2-regularized logistic regression on standardized features, full batch, "
                  "deterministic: --l2).", choices=("adam", "lbfgs"))
    l2: float = f(0.01, "With --head=lbfgs: the L2 penalty on the standardized features' coefficients.", gt=0)
    flip: bool = f(True, "Also train on the mirror images' features.")
    tta_flip: bool = f(True, "Score each photo and its mirror image and average the logits: in the out-of-fold "
                       "figures and in the exported model (twice the inference cost).")
    seed: int = f(0, "Seed (fold k uses seed + k).", ge=0, lt=2**31)
    strategy: str = f("auto", "tf.distribute strategy (features are extracted and heads fitted under it).",
                      choices=STRATEGIES)
    cache_dir: str | None = f(None, "Feature cache (default <out>/../cache; shared with train).")
    cache_groups: list[str] | None = f(None, "Cache these groups of folds as one file each, e.g. fold2,fold3+fold4 "
                                       "(default: one file per fold; only changes caching).")
    soft_targets: str | None = f(None, "Distillation: train on these P(dog) (an out-of-fold CSV of a teacher, e.g. "
                                 "runs/final/oof_predictions.csv) instead of the 0/1 labels; out-of-fold figures "
                                 "still score the labels (and are optimistic: the teacher saw the other folds).")
    finetune_blocks: int = f(0, "Stage 2 inside k-fold: after its head, each fold also trains the backbone's top N "
                             "blocks (a copy per fold) on cached activations of the frozen bottom (photo and mirror "
                             "image); the exported member runs every fold's top. 0: heads only (one backbone).", ge=0)
    finetune_epochs: int = f(1, "With --finetune_blocks: stage-2 epochs per fold (fixed, cosine decay to 0).", ge=1)
    finetune_lr: float = f(1e-4, "With --finetune_blocks: stage-2 peak learning rate.", gt=0, le=10)
    warmup_epochs: float = f(0.1, "With --finetune_blocks: stage-2 epochs of linear warm-up from 0.", ge=0)
    weight_decay: float = f(0.05, "With --finetune_blocks: stage-2 decoupled weight decay (AdamW; 0: Adam).",
                            ge=0, lt=1)

    def ignored(self):
        out = {} if self.finetune_blocks else unread(
            FINETUNE_ONLY, "--finetune_blocks=0: there is no stage 2")
        if self.head == "lbfgs":
            return {**out, **unread(["epochs", "lr", "batch_size"], "--head=lbfgs fits each head full-batch to "
                                    "convergence")}
        return {**out, **unread(["l2"], "--l2 is the penalty of --head=lbfgs")}

    def relations(self):
        bad = [k for k in self.folds or () if not (k.startswith("fold") and k[4:].isdigit())]
        if bad:
            return f"--folds: {bad[0]!r} is not a fold name (fold0, fold1, ...)"
        if self.folds is not None and len(self.folds) < 2:
            return f"--folds: k-fold needs at least 2 folds, got {','.join(self.folds) or 'none'}"
        try:
            parts = self.parts()
        except ValueError as e:
            return str(e)
        if self.finetune_blocks and len(parts) > 1:
            return f"--finetune_blocks needs one backbone, not the fusion {self.backbone}"
        return None

    def resolved_out(self) -> str:
        return self.out or "_".join(["runs/kfold/" + self.slug()] + [self.pooling] * (self.pooling != "avg") +
                                    [self.head] * (self.head != "adam") +
                                    [f"ft{self.finetune_blocks}"] * bool(self.finetune_blocks))

    def slug(self) -> str:
        """The backbone spec as a file and model name: a+b@380 -> a_b_380."""
        return self.backbone.replace("+", "_").replace("@", "_")

    def parts(self) -> list[tuple[str, int | None]]:
        """(backbone, input size or None for its own) of each fused backbone: a@300+b -> [(a, 300), (b, None)]."""
        out = []
        for part in self.backbone.split("+"):
            name, _, size = part.partition("@")
            if size and not (size.isascii() and size.isdigit() and len(size) <= 5 and 16 <= int(size) <= 2048):
                raise ValueError(f"--backbone: {part!r}: the size after @ must be a number of pixels, 16..2048")
            out.append((name, int(size) if size else self.image_size))
        if self.image_size and (len(out) > 1 or "@" in self.backbone):
            raise ValueError("--image_size applies to a single backbone without @SIZE; give each fused one its size "
                             "as NAME@SIZE")
        return out


@dataclasses.dataclass
class EnsembleConfig(Checked):
    member: list[str] = f([], "Model (file or folder) to combine; repeat for each member.", multi=True)
    out: str = f("runs/ensemble", "Output folder (model.keras, ensemble.json).")
    oof: bool = f(False, "Members are k-fold runs (catdog_tf.kfold): fit on their out-of-fold predictions "
                  "instead of predicting --split.")
    records: str = f("records", "Records folder whose split fits the combination (without --oof).")
    split: str = f("validation", "Split used to fit weights and temperature (without --oof).")
    fold: int | None = f(None, "Fold (records built with --folds).", ge=0)
    weights: list[float] | None = f(None, "Fixed weights, e.g. 0.2,0.3,0.5 (default: fitted; with --oof the "
                                     "temperature and hedge are still fitted).", ge=0, le=1e6)
    space: str = f("auto", "Averaging space (auto: the better one).", choices=("auto", "prob", "logit"))
    temperature: bool = f(True, "Fit a temperature.")
    hedge: str = f("auto", "With --oof: scale the logit by the ImageNet cat/dog mass (pulls photos with no "
                   "animal or both toward 0.5); auto keeps it when the cross-fitted log loss improves.",
                   choices=("auto", "on", "off"))
    floor: str = f("auto", "With --oof: a label-noise floor eps, P -> eps + (1 - 2 eps) P, fitted last (a few labels "
                   "are wrong: no photo should cost more than -log(eps)); auto keeps it when the cross-fitted log loss "
                   "improves.", choices=("auto", "on", "off"))
    batch_size: int = batch_field(32)

    def ignored(self):
        if self.oof:
            return unread(["records", "split", "fold", "batch_size"], "with --oof the members' out-of-fold "
                           "predictions are combined: nothing is predicted")
        return unread(["hedge", "floor"], "the hedge and the floor are fitted with --oof only")

    def relations(self):
        for name in ("hedge", "floor"):
            if not self.oof and getattr(self, name) == "on":
                return f"--{name}=on needs --oof (it is fitted on k-fold members' out-of-fold predictions)"
        if self.weights is not None:
            if sum(self.weights) <= 0:
                return f"--weights={','.join(map(str, self.weights))}: need a positive sum"
            if self.member and len(self.weights) != len(self.member):
                return f"--weights: {len(self.weights)} weights for {len(self.member)} members"
        return None


@dataclasses.dataclass
class EvaluateConfig(Checked):
    model: str = f("runs/final/model.keras", "Model file or model folder.")
    images: str | None = f(None, "Folder of labeled images cat.N.jpg / dog.N.jpg.")
    records: str | None = f(None, "Records folder.")
    predictions: str | None = f(None, "Score this out-of-fold predictions CSV (or k-fold run folder) instead of a "
                                "model; --records adds the photos to the contact sheet.")
    split: str = f("validation", "Records split to evaluate.")
    fold: int | None = f(None, "Fold (records built with --folds).", ge=0)
    worst: int = f(24, "Photos on the worst-mistakes contact sheet.", ge=0, le=10_000)
    json_out: str | None = f(None, "Write the JSON summary here.")
    out: str | None = f(None, "Folder for plots (default: next to --json_out).")
    tta: str = f("none", "Test-time augmentation.", choices=TTA)
    clip: list[float] | None = f(None, "Also report the log loss under this clip, e.g. 1e-3 (repeatable).", multi=True,
                                  ge=0, lt=0.5)
    strategy: str = f("auto", "tf.distribute strategy: batches split across devices, photos across workers "
                      "(the chief writes).", choices=STRATEGIES)
    batch_size: int = batch_field(32)
    max_pixels: int = f(4 * MAX_PIXELS, "Refuse photos with more pixels than this (memory: 3 bytes a pixel).", ge=1)

    def ignored(self):
        if self.predictions:
            return unread(["model", "tta", "split", "fold", "batch_size", "max_pixels", "images"],
                           "--predictions scores a CSV: no model runs (--records only adds the photos)")
        if self.images:
            return unread(["split", "fold"], "it selects a records split; --images scores the whole folder")
        return unread(["max_pixels"], "records hold photos already checked at their build")


@dataclasses.dataclass
class PredictConfig(Checked):
    model: str = f("runs/final/model.keras", "Model file or model folder.")
    images: str | None = f(None, "Folder of test images N.jpg.")
    records: str | None = f(None, "Records folder; its 'test' split is predicted.")
    out: str = f("submission.csv", "Submission CSV path.")
    clip: float = f(1e-15, "Clip P(dog) to [clip, 1-clip] in the submission.", ge=0, lt=0.5)
    tta: str = f("flip", "Test-time augmentation.", choices=TTA)
    strategy: str = f("auto", "tf.distribute strategy: batches split across devices, photos across workers "
                      "(the chief writes).", choices=STRATEGIES)
    batch_size: int = batch_field(32)
    max_pixels: int = f(4 * MAX_PIXELS, "Refuse photos with more pixels than this (memory: 3 bytes a pixel); every "
                        "test id needs a row, so the limit is higher than records'.", ge=1)


@dataclasses.dataclass
class OutliersConfig(Checked):
    images: str | None = f(None, "Folder of labeled images cat.N.jpg / dog.N.jpg.")
    records: str | None = f(None, "Records folder (its labeled splits are screened).")
    out: str = f("reports/outliers", "Output folder.")
    top_n: int = f(30, "A candidate has no cat/dog class among its top N ImageNet classes.", ge=1, le=1000)
    backbone: str = f("efficientnet_lite2", "Registry backbone with an ImageNet head (Lite2: the best offline one).")
    weights: str | None = weights_field()
    conflict: float = f(0.8, "Summed probability of the opposite group that flags a label conflict.", gt=0,
                        le=1)
    batch_size: int = batch_field(32)
    per_page: int = f(48, "Photos per contact-sheet page.", ge=1, le=1000)

    def relations(self):
        return _needs_pretrained(self.weights, "the screen reads ImageNet predictions")


@dataclasses.dataclass
class BackbonesConfig(Checked):
    backbone: str = f("efficientnet_lite0", "Registry name.")
    weights: str | None = weights_field()
    classify: bool = f(False, "Print the top ImageNet classes of the photos given as arguments.")
    top: int = f(5, "How many classes to print per photo.", ge=1, le=1000)
    image_size: int | None = f(None, "Input size (default: the backbone's own).", ge=16, le=2048)

    def relations(self):
        return _needs_pretrained(self.weights, "--classify prints ImageNet predictions") if self.classify else None

    def ignored(self):
        return {} if self.classify else unread(["weights", "top", "image_size"], "it applies to --classify")


def _needs_pretrained(weights, why: str) -> str | None:
    """Random weights would give random ImageNet classes: a silently meaningless result."""
    if weights in NO_WEIGHTS:
        return f"--weights={weights}: {why}, which random weights cannot give (use auto, imagenet or a file)"
    return None


@dataclasses.dataclass
class ExploreConfig(Checked):
    images: list[str] = f([], "Kaggle-layout image folder (cat.N.jpg, dog.N.jpg, N.jpg) or a Kaggle root with "
                          "train/ and test/; repeatable.", multi=True)
    records: str | None = f(None, "Records folder (shards + manifest.json) from catdog_tf.records.")
    out: str = f("reports/explore", "Report folder (index.html, summary.json, PNGs).")
    near_dup_threshold: int = f(6, "Max Hamming distance (of 64 pHash bits) for two images to be near-duplicates "
                                "(above ~16 of 64 bits pairs are mostly unrelated photos, and their count grows "
                                "with the square of the photos).", ge=0, le=16)
    workers: int = f(2, "Processes reading and decoding files (1 = no pool, in this process).", ge=1, le=256)
    progress: bool = f(True, "Show a progress bar.")


@dataclasses.dataclass
class BenchConfig(Checked):
    quick: bool = f(False, "Every row on a tiny subset (< 2 min); figures not meaningful.")
    sections: list[str] = f(["pipeline", "train", "infer", "build", "scale"], "Sections to run.", distinct=True)
    out: str | None = f(None, "Folder for the tables (bench.md) and every row (bench.json); default: a new "
                        "temporary folder.")
    update: bool = f(False, "Also rewrite the generated tables of BENCHMARKS.md (and BENCHMARKS.json) in the "
                     "repository; the prose around them is kept.")
    native: str | None = f(None, "Folder of native-size Kaggle photos (default ../shared/data/kaggle_native/train).")
    kaggle200: str | None = f(None, "Folder of 200 px Kaggle photos (default ../shared/data/kaggle200/train).")
    work_dir: str | None = f(None, "Scratch folder for links, records and logs (default: a temp folder).")
    keep_work: bool = f(False, "Keep the scratch folder (logs of every row).")
    render: str | None = f(None, "Only re-write the tables from this JSON of an earlier run.")


@dataclasses.dataclass
class ExportConfig(Checked):
    model: str = f("runs/final/model.keras", "Model file or model folder to export.")
    out: str = f("runs/export", "Output folder: model.keras, saved_model/, model.tflite, README.md.")
    quantize: list[str] = f([], "Also write LiteRT variants: float16 and/or dynamic (int8 weights).",
                            choices=("float16", "dynamic"), distinct=True)
    measure_records: str | None = f(None, "Then measure log loss and img/s of every written model on this records "
                                    "folder's --measure_split (into export.json).")
    measure_split: str = f("fold0+fold1", "Split for --measure_records.")
    measure_beside: list[str] = f([], "With --measure_records: also measure these earlier export folders (e.g. "
                                  "runs/export) on the same photos in the same process, for side-by-side img/s "
                                  "(each into its own export.json; the table into this one's).", multi=True)

    def ignored(self):
        return {} if self.measure_records else unread(["measure_split", "measure_beside"],
                                                      "they go with --measure_records")
