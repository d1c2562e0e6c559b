"""Strategy, mixed precision and XLA choices (catdog_tf/distribution.py)."""

import json
import subprocess
import sys

import pytest

from catdog_tf.errors import UserError
from conftest import REPO
from catdog_tf import distribution

TWO = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}


def test_tf_config_parsing(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution.tf_config_workers() == 0 and distribution.is_chief() and distribution.worker_index() == 0
    monkeypatch.setenv("TF_CONFIG", json.dumps(TWO))
    assert distribution.tf_config_workers() == 2 and not distribution.is_chief() and distribution.worker_index() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TWO, "task": {"type": "worker", "index": 0}}))
    assert distribution.is_chief()
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(chief))
    assert distribution.tf_config_workers() == 2 and not distribution.is_chief()  # the chief writes, not worker 0
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG is not valid JSON"):
        distribution.tf_config_workers()


def test_cpu_choices_and_their_reasons():
    import tensorflow as tf

    mp, why = distribution.choose_mixed_precision("auto")
    assert mp is False and "slower than float32 on CPU" in why
    assert distribution.choose_mixed_precision("on")[0] and not distribution.choose_mixed_precision("off")[0]
    default = tf.distribute.get_strategy()
    assert distribution.choose_xla("auto", default)[0] is False and distribution.choose_xla("on", default)[0]
    for bad in (lambda: distribution.choose_mixed_precision("maybe"), lambda: distribution.choose_xla("x", default),
                lambda: distribution.choose_strategy("gpus")):
        with pytest.raises(UserError):
            bad()
    s, why = distribution.choose_strategy("auto")
    assert distribution.strategy_name(s) == "default strategy" and why == "one device"


@pytest.mark.parametrize("name, devices, expected", [
    ("auto", 2, "default strategy"),  # logical CPUs are a stand-in: auto counts GPUs only
    ("mirrored", 2, "MirroredStrategy 2"),
    ("mirrored", 1, "MirroredStrategy 1"),
])
def test_strategy_choice_in_a_fresh_process(name, devices, expected):
    code = (
        "import tensorflow as tf\n"
        f"cpu = tf.config.list_physical_devices('CPU')[0]\n"
        f"tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * {devices})\n"
        "from catdog_tf import distribution\n"
        f"s, why = distribution.choose_strategy({name!r})\n"
        "n = distribution.strategy_name(s)\n"
        "print('RESULT', n + (' %d' % s.num_replicas_in_sync if n != 'default strategy' else ''))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"RESULT {expected}" in r.stdout


def test_multiworker_chosen_from_tf_config_in_a_fresh_process():
    code = ("from catdog_tf import distribution\n"
            "s, why = distribution.choose_strategy('auto')\n"
            "print('RESULT', distribution.strategy_name(s), why)\n")
    env = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:0"]}, "task": {"type": "worker", "index": 0}})}
    import os

    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RESULT default strategy" in r.stdout  # one worker listed: nothing to distribute over
    r = subprocess.run([sys.executable, "-c", code.replace("'auto'", "'multiworker'")], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RESULT MultiWorkerMirroredStrategy" in r.stdout
