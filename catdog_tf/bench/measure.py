"""Timing: wall clock, the process's CPU time and what other processes used meanwhile.

images/s is the median of several timed runs after a warm-up; images per CPU-second (the
row's own process) is far less sensitive to other jobs on a shared machine; others' cores
come from /proc/stat. No TensorFlow here.
"""

from __future__ import annotations

import os
import statistics
import sys
import time


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def snap() -> tuple[float, float, float | None]:
    return time.perf_counter(), time.process_time(), busy_seconds()


def sample(n: int, a, b) -> dict:
    """One timed run of n images between two snap()s."""
    wall, cpu = b[0] - a[0], b[1] - a[1]
    busy = None if a[2] is None or b[2] is None else b[2] - a[2]
    return {"n": n, "wall": wall, "cpu": cpu, "others": None if busy is None else max(0.0, busy - cpu)}


def summarize(samples: list[dict]) -> dict:
    """Median images/s over timed runs, plus CPU-normalized rate, cores used and others' load."""
    if not samples:
        raise ValueError("no timed runs")
    rates = [x["n"] / x["wall"] for x in samples]
    out = {
        "images_per_s": statistics.median(rates),
        "runs": [round(r, 2) for r in rates],
        "images_per_run": samples[0]["n"],
        "cpu_images_per_s": statistics.median(x["n"] / max(x["cpu"], 1e-9) for x in samples),
        "cores_used": statistics.median(x["cpu"] / x["wall"] for x in samples),
    }
    others = [x["others"] / x["wall"] for x in samples if x.get("others") is not None]
    out["others_cores"] = statistics.median(others) if others else None
    return out


def ratio_runs(samples: list[dict], base: list[dict]) -> dict:
    """Per-round ratios of paired runs (same round, same load): wall clock and per CPU-second."""
    rs = [(x["n"] / x["wall"]) / (b["n"] / b["wall"]) for x, b in zip(samples, base)]
    cs = [(x["n"] / x["cpu"]) / (b["n"] / b["cpu"]) for x, b in zip(samples, base)]
    return {"ratio": statistics.median(rs), "runs": [round(v, 3) for v in rs], "cpu": statistics.median(cs)}


def measure(run_once, warmup: int, repeats: int) -> dict:
    """run_once() -> images processed; warm-up runs are discarded."""
    for _ in range(warmup):
        run_once()
    samples = []
    for _ in range(repeats):
        a = snap()
        n = run_once()
        samples.append(sample(n, a, snap()))
    return summarize(samples)


class Clock:
    """Wraps an iterable of batches and notes the time each batch is handed out, so a library
    function that loops over batches itself (features.extract, predict.predict_batches) can
    be timed per chunk of batches, leaving out the first batches (tracing, warm-up)."""

    def __init__(self, iterable, count=len):
        self.iterable, self.count = iterable, count
        self.marks: list = []
        self.sizes: list[int] = []

    def __iter__(self):
        for item in self.iterable:
            self.marks.append(snap())
            self.sizes.append(int(self.count(item)))
            yield item
        self.marks.append(snap())

    def summary(self, warmup: int, chunk: int) -> dict:
        samples = []
        i = warmup
        while i + chunk < len(self.marks):
            samples.append(sample(sum(self.sizes[i:i + chunk]), self.marks[i], self.marks[i + chunk]))
            i += chunk
        return summarize(samples)
