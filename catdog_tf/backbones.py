"""The backbone registry as a table, or the ImageNet top classes of a few photos.

    python -m catdog_tf.backbones                              # the registry as a table
    python -m catdog_tf.backbones --backbone=efficientnet_lite0 --classify cat.jpg dog.jpg
"""

import numpy as np

from catdog_tf import cli
from catdog_tf.config import BackbonesConfig
from catdog_tf.errors import UserError


def load_images(paths, size: int) -> np.ndarray:
    """Photos as float32 RGB 0..255 at size x size, decoded and resized as the pipeline does."""
    from catdog_tf.data import pipeline

    return np.concatenate([b.numpy() for b in pipeline.files_dataset([str(p) for p in paths], size, 32)])


def registry_table() -> str:
    """name, input size, pooled feature size, offline availability, weights source."""
    from catdog_tf.models import registry

    rows = [("name", "input", "features", "offline", "weights source")]
    for b in registry.REGISTRY.values():
        source = f"keras download {b.weight_url()}" if b.is_keras_app else f"pip {b.weights_source[4:]} (.pth)"
        rows.append((b.name, str(b.input_size), str(b.feature_size),
                     "yes" if b.offline_available() else "no", source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv):
    from catdog_tf.models import imagenet, registry, weights

    cfg = cli.from_flags(BackbonesConfig)
    photos = argv[1:]
    if not cfg.classify:
        if photos:
            raise UserError(f"unexpected arguments {photos} (did you mean --classify?)")
        print(registry_table())
        print(f"\nkeras weights dir: {weights.keras_models_dir()}   converted weights: {weights.weights_cache_dir()}")
        return
    if not photos:
        raise UserError("--classify needs photo paths as arguments")
    model = registry.build_backbone(cfg.backbone, weights=cfg.weights, include_top=True, image_size=cfg.image_size)
    probs = model.predict(load_images(photos, model.input_shape[1]), verbose=0)
    for path, preds in zip(photos, imagenet.decode_predictions(probs, top=cfg.top)):
        print(path)
        for idx, label, p in preds:
            print(f"  {p:7.2%}  {idx:4d}  {label}")


def run():
    """The `catdog-backbones` console script."""
    cli.run(main, lambda: cli.define_flags(BackbonesConfig))


if __name__ == "__main__":
    run()
