"""Choosing the tf.distribute strategy, mixed precision and XLA, each with a logged reason."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from catdog_tf.config import STRATEGIES
from catdog_tf.errors import UserError


def tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
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
        s = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
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


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "TPUStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return "default strategy"


def worker_index() -> int:
    """This process's index among the workers (0 without TF_CONFIG)."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    return int(task.get("index", 0))


def is_chief() -> bool:
    """True on the worker that writes the model (chief, or worker 0 when there is no chief)."""
    cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
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
        return True, "asked for (--xla=on); augmentation moves to tf.data, outside the compiled step"
    if mode == "off":
        return False, "asked for (--xla=off)"
    if mode != "auto":
        raise UserError(f"xla must be auto/on/off, not {mode!r}")
    if not tf.config.list_physical_devices("GPU"):
        return False, "CPU: XLA measured 4-6x slower on this kind of model"
    if strategy.num_replicas_in_sync > 1:
        return False, "Keras does not jit-compile under a multi-replica tf.distribute strategy"
    return True, "single GPU; augmentation runs in tf.data, outside the compiled step"
