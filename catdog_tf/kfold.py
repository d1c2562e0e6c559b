"""`python -m catdog_tf.kfold --backbone=efficientnet_lite2 --image_size=300 --records=runs/records --folds=fold2,...`

K-fold heads on cached frozen features: out-of-fold predictions and one model, the mean of
the fold heads (see catdog_tf/training/crossfit.py).
"""

import json

from catdog_tf import cli
from catdog_tf.config import KFoldConfig


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.training import crossfit

    cli.no_extra_args(argv)
    report = crossfit.run(cli.from_flags(KFoldConfig))
    print(json.dumps({k: report[k] for k in ("count", "oof_log_loss", "oof_accuracy")}))


def run():
    """The `catdog-kfold` console script."""
    cli.run(main, lambda: cli.define_flags(KFoldConfig))


if __name__ == "__main__":
    run()
