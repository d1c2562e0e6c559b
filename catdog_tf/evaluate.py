"""`python -m catdog_tf.evaluate --model=runs/final/model.keras --images=DIR --json_out=eval.json`

Log loss and accuracy on labeled photos (a folder or a records split), a calibration plot
and a contact sheet of the worst mistakes (see catdog_tf/inference/scoring.py).
--out_dir is an alias of --out.
"""

import json
import posixpath

from catdog_tf import cli
from catdog_tf.config import EvaluateConfig
from catdog_tf.errors import UserError


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf import distribution
    from catdog_tf import files
    from catdog_tf.inference import predictor, scoring

    cli.no_extra_args(argv)
    cfg = cli.from_flags(EvaluateConfig)
    if cfg.json_out:
        files.check_output_file(cfg.json_out, "json_out", {"model": cfg.model, "predictions": cfg.predictions,
                                                           "records": cfg.records, "images": cfg.images})
    # eval.json -> eval_plots (string rules: the path may be gs://... as well as local)
    out_dir = cfg.out or (posixpath.splitext(cfg.json_out)[0] + "_plots" if cfg.json_out else None)
    clips = tuple(scoring.DEFAULT_CLIPS) + tuple(cfg.clip or ())
    strategy, w = distribution.choose(cfg.strategy)
    out_dir = out_dir if w.chief else None  # every worker gets every prediction; the chief writes
    if cfg.predictions:
        if cfg.images:
            raise UserError("--predictions scores a CSV: give --records (for the photos), not --images")
        s = scoring.evaluate_predictions(cfg.predictions, records_dir=cfg.records, out_dir=out_dir, clips=clips,
                                          worst=cfg.worst)
        s["data"] = cfg.predictions
    else:
        if bool(cfg.images) == bool(cfg.records):
            raise UserError("give exactly one of --images=FOLDER or --records=FOLDER")
        s = scoring.evaluate(predictor.load_model(cfg.model, strategy), images=cfg.images, records_dir=cfg.records,
                              split=cfg.split, fold=cfg.fold, tta=cfg.tta, batch_size=cfg.batch_size, out_dir=out_dir,
                              clips=clips, max_pixels=cfg.max_pixels, worst=cfg.worst, strategy=strategy)
        s["model"] = cfg.model
        s["data"] = cfg.images or f"{cfg.records}:{cfg.split}"
    lo, hi = s["log_loss_ci95"]
    print(f"log loss {s['log_loss']:.5f} (95% CI {lo:.5f}-{hi:.5f})  accuracy {s['accuracy']:.4f}  count {s['count']}"
          f"  (tta={s.get('tta', 'none')})")
    if "cleaned" in s:
        c = s["cleaned"]
        print(f"  without the {s['excluded']} photos excluded from training: log loss {c['log_loss']:.5f} "
              f"(95% CI {c['log_loss_ci95'][0]:.5f}-{c['log_loss_ci95'][1]:.5f}) on {c['count']}")
    for c, v in s["log_loss_clipped"].items():
        print(f"  clipped to [{c}, 1-{c}]: {v:.5f}")
    if cfg.json_out and w.chief:
        files.write_text(cfg.json_out, json.dumps(s, indent=1))  # parent folders made
        print(f"wrote {cfg.json_out}" + (f" and plots in {out_dir}" if out_dir else ""))


def run():
    """The `catdog-evaluate` console script."""
    cli.run(main, lambda: cli.define_flags(EvaluateConfig, aliases={"out_dir": "out"}))


if __name__ == "__main__":
    run()
