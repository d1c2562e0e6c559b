"""The parent process: prepares the data and runs every row in a fresh child process
(catdog_tf.bench.child), then gathers the rows, ratios and estimate into one dict.

It never imports TensorFlow: each child gets its environment (TF_ENABLE_ONEDNN_OPTS,
taskset, logical CPU devices) before TensorFlow starts in it, and no row's memory or thread
pools pollute the next. Versions come from the installed packages' metadata.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catdog_tf.bench import tables
from catdog_tf.bench.measure import log
from catdog_tf.bench.plan import SECTIONS, Row, Settings, plan
from catdog_tf.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_group(rows: list[Row], logs: Path, timeout: float) -> list[dict]:
    """Runs rows in ONE fresh subprocess (their env/taskset/devices must agree)."""
    logs.mkdir(parents=True, exist_ok=True)
    r0 = rows[0]
    fd, spec = tempfile.mkstemp(suffix=".json", prefix="rows-", dir=logs)
    os.close(fd)
    Path(spec).write_text(json.dumps([dataclasses.asdict(r) for r in rows]))
    out = spec.replace("rows-", "out-")
    cmd = [sys.executable, "-m", "catdog_tf.bench.child", spec, out, str(r0.cpu_devices)]
    if r0.cpus:
        cmd = ["taskset", "-c", r0.cpus] + cmd
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **r0.env}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    log_path = Path(spec.replace("rows-", "log-").replace(".json", ".txt"))
    with open(log_path, "w") as lf:
        try:
            proc = subprocess.run(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout, cwd=str(REPO))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc == 0 and Path(out).exists():
        return json.loads(Path(out).read_text())
    tail = log_path.read_text()[-1500:]
    return [{**dataclasses.asdict(r), "result": {"error": f"child exited {rc}; log {log_path}: ...{tail}"}}
            for r in rows]


def run_all(rows: list[Row], logs: Path, one_per_process: bool, timeout: float = 900) -> list[dict]:
    """One subprocess per row (full mode), or one per distinct subprocess setup (environment,
    taskset, logical devices) in quick mode, where process start-up would dominate."""
    if one_per_process:
        groups = [[r] for r in rows]
    else:
        by_key: dict[str, list[Row]] = {}
        for r in rows:
            by_key.setdefault(r.group_key(), []).append(r)
        groups = list(by_key.values())
    results = []
    for g in groups:
        for res in run_group(g, logs, timeout * len(g)):
            results.append(res)
            log(f"({len(results)}/{len(rows)}) {res['section']} | {res['table']} | {res['name']}: "
                f"{short(res['result'])}")
    return results


def short(r: dict) -> str:
    """One row's figures on one progress line."""
    if "error" in r:
        return "FAILED " + r["error"].splitlines()[0][:200]
    runs = r.get("runs") or [0]
    s = (f"{r['images_per_s']:.1f} img/s (runs {min(runs):.0f}-{max(runs):.0f}), "
         f"{r['cpu_images_per_s']:.1f} img/CPU-s, {r['cores_used']:.2f} cores")
    if r.get("others_cores") is not None:
        s += f", others {r['others_cores']:.2f} cores"
    return s + f", peak RSS {r['rss_peak_mb']:.0f} MB"


def _installed(*names: str) -> tuple[str | None, str | None]:
    """(distribution, version) of the first of `names` that is installed."""
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    tf_dist, tf_version = _installed("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tf-nightly")
    mem = _proc_field("/proc/meminfo", "MemTotal")
    return {"cores": os.cpu_count(), "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
            "memory_gb": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
            "python": platform.python_version(), "tensorflow": tf_version, "tensorflow_package": tf_dist,
            "keras": _installed("keras")[1], "platform": platform.platform(),
            "loadavg_at_start": list(os.getloadavg()),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")}


def prepare(work: Path, native: Path, k200: Path, s: Settings) -> dict:
    """prepare.prepare in a child (records.build imports TensorFlow)."""
    row = Row("setup", "setup", "prepare data", "prepare",
              dict(work=str(work), native=str(native), k200=str(k200), settings=dataclasses.asdict(s)))
    res = run_group([row], work / "logs", timeout=3600)[0]["result"]
    if "error" in res:
        raise UserError(f"preparing the data failed: {res['error'].strip().splitlines()[-1][:300]}")
    return res


def run_benchmark(quick: bool = False, sections=SECTIONS, native_dir: str | None = None,
                  k200_dir: str | None = None, work_dir: str | None = None, keep_work: bool = False,
                  command: str = "python -m catdog_tf.bench") -> dict:
    """Prepares the data, runs every row in its own subprocess; returns every row, the
    ratios and the GPU estimate (what bench.json holds)."""
    t0 = time.time()
    s = Settings.small() if quick else Settings.full()
    native = Path(native_dir) if native_dir else SHARED_DATA / "kaggle_native" / "train"
    k200 = Path(k200_dir) if k200_dir else SHARED_DATA / "kaggle200" / "train"
    own_work = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="catdog-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"{'quick' if quick else 'full'} benchmark; work folder {work}")
    try:
        prep = prepare(work, native, k200, s)
        rows = plan(prep, s, sections)
        log(f"{len(rows)} rows in {', '.join(sections)}")
        meta = machine_info()
        results = run_all(rows, work / "logs", one_per_process=not quick)
        data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": meta,
                "settings": dataclasses.asdict(s), "sections": list(sections), "prep": prep, "rows": results}
        data["ratios"] = tables.compute_ratios(results, s)
        data["gpu"] = tables.gpu_estimate(results, s)
        data["total_minutes"] = (time.time() - t0) / 60
        failed = sum("error" in r["result"] for r in results)
        log(f"done in {data['total_minutes']:.1f} min; {failed} failed row(s)")
        return data
    finally:
        if own_work and not keep_work:
            shutil.rmtree(work, ignore_errors=True)
