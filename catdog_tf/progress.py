"""Progress lines for long work: count, rate and ETA, one line every few seconds.

A line per step rather than a redrawn bar: it stays readable in logs and CI output.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, desc: str, every_s: float = 10.0, unit: str = "img"):
        self.total, self.desc, self.every_s, self.unit = total, desc, every_s, unit
        self.n, self.t0, self.last = 0, time.time(), 0.0

    def update(self, n: int):
        self.n += n
        now = time.time()
        if now - self.last >= self.every_s or (self.total and self.n >= self.total):
            self.last = now
            rate = self.n / max(now - self.t0, 1e-9)
            if self.total:
                eta = (self.total - self.n) / max(rate, 1e-9)
                print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                      f"{rate:.1f} {self.unit}/s, ETA {eta:.0f}s", file=sys.stderr, flush=True)
            else:
                print(f"{self.desc}: {self.n} {rate:.1f} {self.unit}/s", file=sys.stderr, flush=True)
