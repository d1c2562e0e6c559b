"""A child process of the benchmark (internal; runner.py starts it):

    python -m catdog_tf.bench.child ROWS.json OUT.json CPU_DEVICES

runs the rows of ROWS.json one after the other and writes them, each with its `result`, to
OUT.json. Its environment (TF_ENABLE_ONEDNN_OPTS, taskset) was set by the parent before this
process imported TensorFlow; logical CPU devices are set here before TF initializes them.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import tensorflow as tf

from catdog_tf.bench import rows
from catdog_tf.bench.prepare import prepare

TASKS = {**rows.KINDS, "prepare": prepare}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _onednn() -> bool | None:
    try:  # private API; informational only
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # noqa: BLE001
        return None


def run_rows_here(specs: list[dict], cpu_devices: int = 0) -> list[dict]:
    """Runs rows (dicts of Row fields) one after the other in this process."""
    if cpu_devices > 1:  # must happen before TF initializes its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    onednn = _onednn()
    out = []
    for r in specs:
        base = rss_mb()  # after importing TensorFlow and Keras: the row's baseline
        t0 = time.time()
        try:
            res = TASKS[r["kind"]](**r["params"])
        except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"[:500]}
        if r["kind"] in rows.KINDS:
            res.update(rss_base_mb=round(base, 1), rss_peak_mb=round(rss_mb(), 1),
                       row_seconds=round(time.time() - t0, 1), onednn=onednn,
                       affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
        out.append({**r, "result": res})
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(f"usage: python -m catdog_tf.bench.child ROWS.json OUT.json CPU_DEVICES (got {argv[1:]})")
    specs = json.loads(Path(argv[1]).read_text())
    Path(argv[2]).write_text(json.dumps(run_rows_here(specs, int(argv[3]))))


if __name__ == "__main__":
    main(sys.argv)
