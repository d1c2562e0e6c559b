"""The backbone registry as a table, or the ImageNet top classes of a few photos.

    python -m catdog_tf.backbones                              # the registry as a table
    python -m catdog_tf.backbones --backbone=efficientnet_lite0 --classify cat.jpg dog.jpg
"""

from catdog_tf import cli
from catdog_tf.config import BackbonesConfig
from catdog_tf.errors import UserError


def main(argv):
    from catdog_tf.models import registry, weights

    cfg = cli.from_flags(BackbonesConfig)
    photos = argv[1:]
    if not cfg.classify:
        if photos:
            raise UserError(f"unexpected arguments {photos} (did you mean --classify?)")
        print(registry.table())
        print(f"\nkeras weights dir: {weights.keras_models_dir()}   converted weights: {weights.weights_cache_dir()}")
        return
    if not photos:
        raise UserError("--classify needs photo paths as arguments")
    for path, preds in zip(photos, registry.classify(photos, cfg.backbone, cfg.weights, cfg.image_size, cfg.top)):
        print(path)
        for idx, label, p in preds:
            print(f"  {p:7.2%}  {idx:4d}  {label}")


def run():
    """The `catdog-backbones` console script."""
    cli.run(main, lambda: cli.define_flags(BackbonesConfig))


if __name__ == "__main__":
    run()
