"""`python -m catdog_tf.outliers --images=../shared/data/kaggle200/train --out=reports/outliers`

Training photos an ImageNet classifier sees no cat or dog in, ranked, with contact sheets for
a person to review (see catdog_tf/tools/outlier_screen.py).
"""

from catdog_tf import cli
from catdog_tf.config import OutliersConfig
from catdog_tf.errors import UserError


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.tools import outlier_screen

    cli.no_extra_args(argv)
    cfg = cli.from_flags(OutliersConfig)
    if bool(cfg.images) == bool(cfg.records):
        raise UserError("give exactly one of --images=FOLDER or --records=FOLDER")
    outlier_screen.run(cfg)


def run():
    """The `catdog-outliers` console script."""
    cli.run(main, lambda: cli.define_flags(OutliersConfig))


if __name__ == "__main__":
    run()
