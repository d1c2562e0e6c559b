"""P(dog) for photos: a Kaggle submission, or a few files on the command line.

    python -m catdog_tf.predict --model=runs/final/model.keras --images=../shared/data/kaggle200/test --out=submission.csv
    python -m catdog_tf.predict --model=runs/final/model.keras photo1.jpg photo2.png

See catdog_tf/inference/predictor.py.
"""

import sys

import numpy as np
from absl import flags
from catdog_tf import cli
from catdog_tf.config import PredictConfig
from catdog_tf.errors import UserError


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf import distribution
    from catdog_tf import files as catdog_files
    from catdog_tf.data import manifest
    from catdog_tf.inference import predictor

    cfg = cli.from_flags(PredictConfig)
    files = argv[1:]
    if files and (cfg.images or cfg.records or flags.FLAGS["out"].present):
        raise UserError("photos as arguments print their P(dog); --images/--records (and --out) write a "
                        "submission: give one or the other")
    if not files and bool(cfg.images) == bool(cfg.records):
        raise UserError("give --images=FOLDER or --records=FOLDER (or image paths as arguments)")
    if not files:
        catdog_files.check_output_file(cfg.out, "out", {"model": cfg.model, "images": cfg.images,
                                                        "records": cfg.records})
    strategy, w = distribution.choose(cfg.strategy)
    model = predictor.load_model(cfg.model, strategy)
    if files:
        p = predictor.predict_files(model, files, cfg.batch_size, cfg.tta, strategy)
        for f, v in zip(files, np.clip(p, cfg.clip, 1 - cfg.clip)) if w.chief else ():
            print(f"{f}\t{v:.6f}")
        return
    if cfg.images:
        photos = predictor.scan_folder(cfg.images, labeled=False, max_pixels=cfg.max_pixels)
        for s in photos.skipped:
            print(f"skip: {s['file']}: {s['reason']}", file=sys.stderr)
        print(photos.describe(), file=sys.stderr)
        ids, expected = photos.ids, photos.ids + photos.missing_ids()
        p = predictor.predict_photos(model, photos, cfg.batch_size, cfg.tta, strategy)
    else:
        ids, _, p = predictor.predict_records(model, cfg.records, "test", cfg.batch_size, cfg.tta, strategy=strategy)
        expected = ids + manifest.lost_ids(cfg.records, labeled=False)
    if not w.chief:  # every worker holds every prediction; the chief writes them
        print(f"worker {w.rank}/{w.count}: done; the chief writes {cfg.out}", file=sys.stderr)
        return
    q = predictor.write_submission(cfg.out, ids, p, cfg.clip, expected)
    print(f"wrote {cfg.out}: {len(ids)} rows, mean P(dog) {np.mean(q):.3f}", file=sys.stderr)


def run():
    """The `catdog-predict` console script."""
    cli.run(main, lambda: cli.define_flags(PredictConfig))


if __name__ == "__main__":
    run()
