"""`python -m catdog_tf.ensemble --oof --member=runs/kfold/a --member=runs/kfold/b --out=runs/final`

Several trained models -> ONE Keras model that outputs the combined P(dog); weights and
temperature fitted on k-fold members' out-of-fold predictions (--oof) or on a records split
(see catdog_tf/inference/ensembling.py).
"""

import json

from catdog_tf import cli
from catdog_tf.config import EnsembleConfig
from catdog_tf.errors import UserError


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.inference import ensembling

    cli.no_extra_args(argv)
    cfg = cli.from_flags(EnsembleConfig)
    if not cfg.member:
        raise UserError("give --member=MODEL at least once")
    if cfg.oof:
        report = ensembling.run_oof(cfg.member, cfg.out, space=cfg.space, temperature=cfg.temperature,
                                  hedge=cfg.hedge, floor=cfg.floor, weights=cfg.weights)
        keys = ("space", "weights", "temperature", "hedge", "floor", "oof_log_loss", "oof_log_loss_ci95", "cleaned_oof_log_loss",
                "oof_accuracy")
    else:
        report = ensembling.run(cfg.member, cfg.records, cfg.out, split=cfg.split, fold=cfg.fold, weights=cfg.weights,
                              space=cfg.space, temperature=cfg.temperature, batch_size=cfg.batch_size)
        keys = ("space", "weights", "temperature", "log_loss", "accuracy")
    if report:  # {}: a worker that is not the chief of a multi-worker job (it said so)
        print(json.dumps({k: report[k] for k in keys}))


def run():
    """The `catdog-ensemble` console script."""
    cli.run(main, lambda: cli.define_flags(EnsembleConfig))


if __name__ == "__main__":
    run()
