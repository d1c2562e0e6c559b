"""Throughput of every stage, side by side in one run: `python -m catdog_tf.bench`.

    python -m catdog_tf.bench --quick         # every row on a tiny subset, < 2 min (the test runs this)
    python -m catdog_tf.bench                 # full run (~15-20 min): tables into a temporary folder
    python -m catdog_tf.bench --update        # full run, then rewrite BENCHMARKS.md's tables
    python -m catdog_tf.bench --render=BENCHMARKS.json --update   # tables again from an earlier run

Every row runs in a fresh subprocess and reports images/s (median of timed runs after a
warm-up), images per CPU-second, cores used, other processes' cores and peak RSS; each input
pipeline table also has a fidelity row (mean |error| of every loader's images against Pillow's
antialiased resize). What the sections measure and what the figures mean is written in
BENCHMARKS.md, around the blocks that --update regenerates.

    plan.py      Settings, Row, plan(), pick(): what a run measures (no TensorFlow)
    measure.py   timing: summarize, measure, Clock (no TensorFlow)
    runner.py    the parent: prepares data and runs the rows in children (no TensorFlow)
    child.py     a child process (TensorFlow starts here): runs prepare.py or rows.py's row functions
    prepare.py   the data every row reads: symlinked photos, records, a zip
    rows.py      the row functions (KINDS), one per kind of measurement
    fidelity.py  the fidelity rows: each loader's images against Pillow's antialiased resize
    tables.py    ratios, the GPU estimate arithmetic, one Markdown block per table
    document.py  bench.md, and the marked blocks of BENCHMARKS.md
"""

from catdog_tf.bench.measure import Clock, measure, summarize
from catdog_tf.bench.plan import SECTIONS, Row, Settings, parse_sections, pick, plan

__all__ = ["SECTIONS", "Clock", "Row", "Settings", "measure", "parse_sections", "pick", "plan", "summarize"]
