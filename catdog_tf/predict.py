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


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf import distribution
    from catdog_tf import files as catdog_files
    from catdog_tf.inference import predictor

    cfg = cli.from_flags(PredictConfig)
    paths = argv[1:]
    predictor.check_request(paths, cfg.images, cfg.records, flags.FLAGS["out"].present)
    if not paths:
        catdog_files.check_output_file(cfg.out, "out", {"model": cfg.model, "images": cfg.images,
                                                        "records": cfg.records})
    strategy, w = distribution.choose(cfg.strategy)
    model = predictor.load_model(cfg.model, strategy)
    if paths:
        p = predictor.predict_files(model, paths, cfg.batch_size, cfg.tta, strategy)
        for f, v in zip(paths, np.clip(p, cfg.clip, 1 - cfg.clip)) if w.chief else ():
            print(f"{f}\t{v:.6f}")
        return
    ids, p, expected = predictor.predict_test_set(model, cfg.images, cfg.records, cfg.batch_size, cfg.tta, strategy,
                                                  cfg.max_pixels)
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
