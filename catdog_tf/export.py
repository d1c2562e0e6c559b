"""`python -m catdog_tf.export --model=runs/final/model.keras --out=runs/export`

Serving artifacts: a SavedModel taking JPEG bytes, a LiteRT model, and a model.keras of
standard layers that loads without catdog_tf (see catdog_tf/inference/serving.py).
"""

import json

from catdog_tf import cli
from catdog_tf.config import ExportConfig


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.inference import serving

    cli.no_extra_args(argv)
    cfg = cli.from_flags(ExportConfig)
    report = serving.export(cfg.model, cfg.out, tuple(cfg.quantize))
    if not report:  # a worker that is not the chief of a multi-worker job (it said so)
        return
    if cfg.measure_records:
        report = serving.measure_side_by_side([cfg.out, *cfg.measure_beside], cfg.measure_records, cfg.measure_split)
    print(json.dumps(report.get("side_by_side") or report.get("measured", {}).get("results") or report["bytes"]))


def run():
    """The `catdog-export` console script."""
    cli.run(main, lambda: cli.define_flags(ExportConfig))


if __name__ == "__main__":
    run()
