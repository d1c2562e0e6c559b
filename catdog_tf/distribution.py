"""Choosing the tf.distribute strategy, mixed precision and XLA, each with a logged reason."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from catdog_tf.config import STRATEGIES
from catdog_tf.errors import UserError


def _tf_config() -> dict:
    """TF_CONFIG, checked against the shape tf.distribute reads: a malformed one is one line."""
    try:
        cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    why = tf_config_problem(cfg)
    if why:
        raise UserError(f"TF_CONFIG: {why} (expected {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, "
                        "\"task\": {\"type\": \"worker\", \"index\": 0}})")
    return cfg


def tf_config_problem(cfg) -> str | None:
    """What is wrong with a parsed TF_CONFIG (None: nothing)."""
    if not isinstance(cfg, dict):
        return f"a JSON object is needed, not {type(cfg).__name__}"
    cluster, task = cfg.get("cluster", {}), cfg.get("task", {})
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        return "'cluster' and 'task' must be objects"
    for role, hosts in cluster.items():
        if role not in ("chief", "worker"):  # a ps or evaluator task would run nothing and exit 0
            return f"cluster role {role!r}: MultiWorkerMirroredStrategy runs 'chief' and 'worker' tasks only"
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h.rpartition(":")[2].isdigit()
                                                  for h in hosts):
            return f"cluster {role!r} must be a list of 'host:port' strings"
    if len(cluster.get("chief", [None])) != 1:
        return "cluster 'chief' must list exactly one address"
    if cluster and not task:
        return "a cluster without a 'task' (this process's type and index)"
    if task:
        kind, index = task.get("type"), task.get("index", 0)
        if kind not in cluster:
            return f"task type {kind!r} is not in the cluster ({', '.join(cluster) or 'empty'})"
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
            return f"task index {index!r} is not one of the {len(cluster[kind])} {kind} address(es)"
    return None


def tf_config_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def choose_strategy(name: str = "auto") -> tuple[tf.distribute.Strategy, str]:
    """Returns (strategy, why). auto: TPU if one is reachable, MultiWorkerMirrored when
    TF_CONFIG lists several workers, Mirrored with several GPUs, else the default strategy."""
    if name not in STRATEGIES:
        raise UserError(f"strategy must be one of {STRATEGIES}, not {name!r}")
    workers = tf_config_workers()
    if name == "tpu" or (name == "auto" and os.environ.get("TPU_NAME")):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "TPU found (TPU_NAME set)"
    if name == "multiworker" or (name == "auto" and workers > 1):
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        with _rendezvous_watchdog(workers):
            s = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
            agree(s, True)  # the first collective: every worker has come
        return s, f"TF_CONFIG describes {workers} workers"
    # Listing logical devices initializes the runtime: only after the multi-worker check,
    # whose collective ops must be configured first.
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or None
        if devices is None:  # CPU stand-in: mirror over the logical CPU devices
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        s = tf.distribute.MirroredStrategy(devices)
        return s, f"{len(devices)} devices on this host ({', '.join(devices)})"
    return tf.distribute.get_strategy(), ("one device" if len(gpus) <= 1 else "asked for default")


RENDEZVOUS_TIMEOUT_ENV = "CATDOG_RENDEZVOUS_TIMEOUT_S"


# Run by a separate small Python process: TensorFlow waits for missing peers inside one call
# that holds the GIL and ignores SIGTERM, so no thread or signal handler of ours could act.
_WATCHDOG = r"""
import os, signal, sys
parent, limit, msg = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
import select
if not select.select([sys.stdin], [], [], limit)[0]:
    print(msg, file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def _rendezvous_watchdog(workers: int):
    """Waiting for the other workers of a multi-worker job is said, and bounded: after
    $CATDOG_RENDEZVOUS_TIMEOUT_S (default 600) seconds a watchdog process prints one error line
    and ends this process (TensorFlow would wait forever)."""
    try:
        limit = float(os.environ.get(RENDEZVOUS_TIMEOUT_ENV, "600"))
    except ValueError:
        limit = float("nan")
    if not 0 < limit < 1e7:
        raise UserError(f"{RENDEZVOUS_TIMEOUT_ENV} must be a number of seconds above 0")
    peers = ", ".join(h for hosts in _tf_config().get("cluster", {}).values() for h in hosts)
    msg = (f"error: TF_CONFIG lists {workers} workers ({peers}) but not all of them came within {limit:g} s; start "
           f"every worker with its own task index, or check the addresses ({RENDEZVOUS_TIMEOUT_ENV} sets the wait)")
    print(f"waiting for the {workers} workers of TF_CONFIG ({peers}), at most {limit:g} s", file=sys.stderr,
          flush=True)
    dog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(limit), msg],
                           stdin=subprocess.PIPE)
    try:
        yield
    finally:
        dog.stdin.close()  # the watchdog's select() returns: it exits quietly
        dog.wait()


def local_strategy() -> tf.distribute.Strategy:
    """Mirrored over this host's GPUs when it has several, else the default: for work one
    process does alone (the chief's part of a multi-worker job)."""
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus]) if len(gpus) > 1 else tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "TPUStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return "default strategy"


def worker_index() -> int:
    """This process's index among the workers (0 without TF_CONFIG)."""
    return int(_tf_config().get("task", {}).get("index", 0))


def is_chief() -> bool:
    """True on the worker that writes the model (chief, or worker 0 when there is no chief)."""
    cfg = _tf_config()
    task = cfg.get("task", {})
    if not task:
        return True
    if "chief" in cfg.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def _gpu_supports_fp16() -> bool:
    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if cc >= (7, 0):
            return True
    return False


def choose_mixed_precision(mode: str = "auto") -> tuple[bool, str]:
    if mode == "on":
        return True, "asked for (--mixed_precision=on)"
    if mode == "off":
        return False, "asked for (--mixed_precision=off)"
    if mode != "auto":
        raise UserError(f"mixed_precision must be auto/on/off, not {mode!r}")
    if _gpu_supports_fp16():
        return True, "GPU with tensor cores (compute capability >= 7.0)"
    return False, "no GPU with tensor cores: float16 is slower than float32 on CPU"


def choose_xla(mode: str, strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    if mode == "on":
        return True, "asked for (--xla=on): each replica's forward and backward compiled, augmentation before it on " \
                     "the device"
    if mode == "off":
        return False, "asked for (--xla=off)"
    if mode != "auto":
        raise UserError(f"xla must be auto/on/off, not {mode!r}")
    if not tf.config.list_physical_devices("GPU"):
        return False, "CPU: XLA measured 4-6x slower on this kind of model"
    return True, (f"GPU ({strategy.num_replicas_in_sync} replica(s)): each replica's forward and backward compiled, "
                  "augmentation before it on the device")


@dataclasses.dataclass(frozen=True)
class Workers:
    """This process's place in a job: rank among `count` workers, and whether it writes outputs."""

    rank: int
    count: int
    chief: bool


def workers(strategy: tf.distribute.Strategy | None = None) -> Workers:
    """Rank and count of the workers of `strategy`: several only under MultiWorkerMirrored
    (rank as TF_CONFIG orders the tasks: the chief first, then the workers)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or tf_config_workers() <= 1:
        # One worker does everything; under a multi-worker TF_CONFIG with another strategy, every
        # process does, and only the chief writes.
        return Workers(0, 1, is_chief())
    cfg = _tf_config()
    task, cluster = cfg.get("task", {}), cfg.get("cluster", {})
    chiefs = len(cluster.get("chief", []))
    rank = 0 if task.get("type") == "chief" else chiefs + int(task.get("index", 0))
    return Workers(rank, tf_config_workers(), is_chief())


def choose(name: str = "auto", log=None) -> tuple[tf.distribute.Strategy, Workers]:
    """choose_strategy + this process's place among the workers, logged in one line."""
    strategy, why = choose_strategy(name)
    w = workers(strategy)
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
        f"strategy: {strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s): {why}; "
        f"worker {w.rank}/{w.count}{' (chief: writes the outputs)' if w.chief else ''}")
    return strategy, w


def split_cpu(n: int) -> None:
    """The CPU as n logical devices (n > 1), to run multi-device code paths on a CPU; before
    TensorFlow makes its devices."""
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """How many replicas this worker runs (the default strategy: one)."""
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        return 1


def replica_map(strategy: tf.distribute.Strategy, fn):
    """batch -> fn(batch) with the batch split across this worker's replicas (distributed
    predict: each device runs fn on its slice; the outputs are concatenated in order)."""
    n = local_replicas(strategy)
    if n <= 1:
        return fn

    def per_replica(images):  # a plain function: strategy.run would bind a tf.function fn to the PerReplica
        return fn(images)

    @tf.function(reduce_retracing=True)
    def run(values):
        return strategy.run(per_replica, args=(values,))

    def call(batch):
        batch = tf.convert_to_tensor(batch)
        m = int(batch.shape[0])
        pad = (-m) % n  # equal slices: repeat the last image, drop its outputs below
        if pad:
            batch = tf.concat([batch, tf.repeat(batch[-1:], pad, axis=0)], 0)
        parts = tf.split(batch, n)
        # Replica j of worker w has replica_id w * n + j: j picks the j-th slice, in local order.
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: parts[ctx.replica_id_in_sync_group % n])
        return tf.concat(strategy.experimental_local_results(run(values)), 0)[:m]

    return call


def _all_sum(strategy: tf.distribute.Strategy, value: np.ndarray) -> np.ndarray:
    """The sum over workers of each worker's `value` (one collective all-reduce)."""
    n = local_replicas(strategy)
    zero = np.zeros_like(value) if n > 1 else None
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: value if ctx.replica_id_in_sync_group % n == 0 else zero)
    return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None))


def gather_rows(strategy: tf.distribute.Strategy, part: np.ndarray, rows: np.ndarray, total: int) -> np.ndarray:
    """Every worker's rows of one [total, ...] array, assembled on every worker: each worker
    holds part = array[rows]. An all-reduce of zero-filled copies, exact (x + 0 = x)."""
    full = np.zeros((total, *part.shape[1:]), np.float32)
    full[rows] = part
    return full if workers(strategy).count == 1 else _all_sum(strategy, full)


def same_everywhere(strategy: tf.distribute.Strategy, value: int) -> bool:
    """True when every worker holds the same `value` (0 <= value < 2**20, exact in float32)."""
    if workers(strategy).count == 1:
        return True
    total = float(_all_sum(strategy, np.asarray([value], np.float32))[0])
    return agree(strategy, total == workers(strategy).count * value)


def share(strategy: tf.distribute.Strategy, total: int) -> tuple[Workers, np.ndarray]:
    """This worker's rows among `total`: every K-th from its rank (all of them on one worker)."""
    w = workers(strategy)
    return w, np.arange(w.rank, total, w.count)


def assemble(strategy: tf.distribute.Strategy, parts: list[np.ndarray], ids: list[str], order: list[str],
             what: str) -> list[np.ndarray]:
    """Each worker's rows of some [total, ...] arrays (rows rank, rank + K, ... of `order`, listed
    by `ids`) -> the whole arrays on every worker, in `order`. A worker that read its rows out of
    order stops every worker (together: a lone failure would leave the others waiting)."""
    w = workers(strategy)
    if not agree(strategy, list(ids) == list(order[w.rank::w.count])):
        raise ValueError(f"{what}: a worker read its photos out of the records' order")
    rows = np.arange(w.rank, len(order), w.count)
    return [gather_rows(strategy, p, rows, len(order)) for p in parts]


def not_chief(what: str, out: str) -> bool:
    """True (and said in one line) on a worker that is not the chief: the chief alone writes."""
    if is_chief():
        return False
    print(f"{what}: worker {worker_index()} is not the chief; the chief writes {out}", file=sys.stderr, flush=True)
    return True


def agree(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True when `flag` is true on every worker (e.g. "this cache file exists"): every worker
    then takes the same branch, so their collectives stay in step."""
    if workers(strategy).count == 1:
        return bool(flag)
    return float(_all_sum(strategy, np.asarray([0.0 if flag else 1.0], np.float32))[0]) == 0.0
