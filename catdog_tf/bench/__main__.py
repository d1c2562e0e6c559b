"""`python -m catdog_tf.bench`: flags from config.BenchConfig; see catdog_tf/bench/__init__.py."""

import sys
import tempfile

from absl import flags

from catdog_tf import cli
from catdog_tf.bench import document, runner
from catdog_tf.bench.measure import log
from catdog_tf.bench.plan import parse_sections
from catdog_tf.config import BenchConfig
from catdog_tf.errors import UserError

FLAGS = flags.FLAGS


def define():
    cli.define_flags(BenchConfig)
    flags.DEFINE_string("benchmarks_dir", str(runner.REPO), "Internal (tests): the folder whose BENCHMARKS.md "
                        "and BENCHMARKS.json --update rewrites.")


def main(argv):
    cli.no_extra_args(argv)
    cfg = cli.from_flags(BenchConfig)
    sections = parse_sections(cfg.sections)
    if cfg.render:  # measures nothing
        data = document.load(cfg.render)
    else:
        if cfg.update:  # refuse before a 20-minute run, not after
            document.check_updatable(cfg.quick, sections)
            document.check_document(FLAGS.benchmarks_dir)
        command = " ".join(["python -m catdog_tf.bench"] + sys.argv[1:])
        data = runner.run_benchmark(quick=cfg.quick, sections=sections, native_dir=cfg.native,
                                    k200_dir=cfg.kaggle200, work_dir=cfg.work_dir, keep_work=cfg.keep_work,
                                    command=command)
    out = cfg.out
    if out is None and not (cfg.render and cfg.update):
        out = tempfile.mkdtemp(prefix="catdog-bench-out-")
    if out is not None:
        for path in document.write_out(out, data, with_json=not cfg.render):
            print(f"wrote {path}")
    if cfg.update:
        changed = document.update(FLAGS.benchmarks_dir, data)
        for path in changed:
            print(f"updated {path}")
        if not changed:
            log(f"{document.DOC} and {document.DATA} already hold these figures")
    failed = sum("error" in r["result"] for r in data["rows"])
    if failed:
        raise UserError(f"{failed} row(s) failed (see the end of {out}/bench.md)")


def run():
    cli.run(main, define)


if __name__ == "__main__":
    run()
