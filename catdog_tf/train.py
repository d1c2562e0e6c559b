"""`python -m catdog_tf.train --backbone=xception --records=records --out=runs/xception`

Two-stage fine-tuning under the tf.distribute strategy that fits the machine (see
catdog_tf/training/two_stage.py). --model_dir is an alias of --out.
"""

import json

from absl import flags

from catdog_tf import cli
from catdog_tf.config import TrainConfig


def define():
    cli.define_flags(TrainConfig, aliases={"model_dir": "out"})
    flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests of multi-device "
                         "code paths on a CPU).")


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf import distribution
    from catdog_tf.training.two_stage import train

    cli.no_extra_args(argv)
    distribution.split_cpu(flags.FLAGS.cpu_devices)
    results = train(cli.from_flags(TrainConfig))
    print(json.dumps({k: results[k] for k in ("val_log_loss", "val_accuracy", "val_count") if k in results}))


def run():
    """The `catdog-train` console script."""
    cli.run(main, define)


if __name__ == "__main__":
    run()
