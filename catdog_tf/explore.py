"""`python -m catdog_tf.explore --images=../shared/data/kaggle_native/train --out=reports/explore`

Counts per class, size plots, exact and near duplicates and undecodable files of an image
folder (--images, repeatable) or a records folder (--records), as OUT/index.html and
OUT/summary.json (see catdog_tf/tools/survey/).
"""

from catdog_tf import cli
from catdog_tf.config import ExploreConfig
from catdog_tf.errors import UserError


def main(argv):
    # The library loads TensorFlow: imported here, so --help answers before it loads.
    from catdog_tf.tools import survey

    cli.no_extra_args(argv)
    cfg = cli.from_flags(ExploreConfig)
    if bool(cfg.images) == bool(cfg.records):
        raise UserError("give exactly one of --images=FOLDER (repeatable) or --records=FOLDER")
    if cfg.workers < 1:
        raise UserError(f"--workers={cfg.workers}: must be at least 1")
    kw = {"near_dup_threshold": cfg.near_dup_threshold, "workers": cfg.workers, "progress": cfg.progress}
    if cfg.records:
        result = survey.explore_records(cfg.records, **kw)
    else:
        result = survey.explore_folder(cfg.images, **kw)
    if not result.items:  # a report of nothing would pass for a clean folder
        raise UserError(f"{cfg.records or ', '.join(cfg.images)}: no photos found (names cat.N.jpg, dog.N.jpg, "
                        "N.jpg, in the folder or its train/ and test/)")
    paths = survey.write_report(result, cfg.out)
    print("\n".join(survey.summary_lines(result, paths)))


def run():
    """The `catdog-explore` console script."""
    cli.run(main, lambda: cli.define_flags(ExploreConfig), tensorflow=False)


if __name__ == "__main__":
    run()
