"""`python -m catdog_tf.records --input=DIR_OR_ZIP --out=records`: shards + manifest.json.

Without --input, TFDS's public cats_vs_dogs is downloaded (online users only).
See catdog_tf/data/shards.py.
"""

from absl import flags

from catdog_tf import cli
from catdog_tf.config import BuildConfig


def define():
    flags.DEFINE_multi_string("input", None, "Kaggle-layout folder (train/, test/, or a folder of cat.N.jpg/dog.N.jpg "
                              "or N.jpg) or a zip of one. Repeatable. None: TFDS cats_vs_dogs.")
    cli.define_flags(BuildConfig)


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.data import shards

    cli.no_extra_args(argv)
    cfg = cli.from_flags(BuildConfig)
    shards.build(flags.FLAGS.input, cfg)


def run():
    """The `catdog-records` console script."""
    cli.run(main, define)


if __name__ == "__main__":
    run()
