"""Read PyTorch .pth state dicts into numpy arrays, without torch and safely.

A .pth file is a pickle, and unpickling runs whatever callables the file names.
So every pickle in the file goes through `_RestrictedUnpickler`, which resolves
only the handful of globals a state dict needs (OrderedDict, the tensor rebuild
functions and the typed storage classes) and refuses anything else, naming the
file and the global.

Two layouts exist (see torch/serialization.py):

* legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): five
  consecutive pickles (magic number, protocol version, sys_info, the object,
  the list of storage keys), then for each key an int64 element count followed
  by the raw storage bytes.
* zip (torch >= 1.6): `<root>/data.pkl` holds the object and
  `<root>/data/<key>` the raw bytes of each storage.

Tensors are rebuilt with their storage offset, size and stride, bounds-checked
against the storage, and copied to a contiguous numpy array.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from catdog_tf.errors import UserError

__all__ = ["UnsafeCheckpointError", "CheckpointFormatError", "load", "load_state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype. bfloat16 has no numpy dtype: it is
# read as uint16 bit patterns and widened to float32 (exact).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file references a global outside the allow-list (possible code execution)."""


class CheckpointFormatError(UserError):
    """The file is not a PyTorch checkpoint this reader understands (a user's file problem:
    one line naming it)."""


# ---------------------------------------------------------------------------
# Placeholders built while unpickling; storages are filled in afterwards
# (in the legacy format the bytes come after the pickle that references them).


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        dt = _STORAGE_DTYPES[self.name]
        return np.dtype(np.uint16) if dt == "bfloat16" else np.dtype(dt)


@dataclass
class _Storage:
    key: str
    stype: _StorageType
    numel: int
    data: np.ndarray | None = None  # 1-D, filled after unpickling


@dataclass
class _StorageView:  # legacy view_metadata: a slice of a root storage
    root: _Storage
    offset: int
    numel: int


@dataclass
class _LazyTensor:
    storage: _Storage | _StorageView
    offset: int
    size: tuple
    stride: tuple
    extra: dict = field(default_factory=dict)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data  # a Parameter is just its tensor for our purposes


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch storage ids."""

    def __init__(self, file, source: str, storages: dict):
        super().__init__(file)
        self._source = source
        self._storages = storages  # key -> _Storage, shared across the file's pickles

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            # Protocol-2 pickles spell Python 3's builtins as __builtin__; name it plainly.
            module = {"__builtin__": "builtins"}.get(module, module)
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}': "
                "only tensors, storages and plain containers are allowed in a "
                "weights file (the file may be malicious or not a plain state dict)"
            ) from None

    def persistent_load(self, pid):
        # legacy: ('storage', type, key, location, numel, view_metadata)
        # zip:    ('storage', type, key, location, numel)
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeCheckpointError(f"{self._source}: unsupported persistent id {pid!r}")
        if len(pid) not in (5, 6) or not isinstance(pid[1], _StorageType):
            raise CheckpointFormatError(f"{self._source}: malformed storage id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, stype, numel)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            view_key, offset, view_numel = view
            return _StorageView(storage, int(offset), int(view_numel))
        return storage


def _unpickle(f, source: str, storages: dict):
    return _RestrictedUnpickler(f, source, storages).load()


# ---------------------------------------------------------------------------
# Storage bytes and tensor materialisation


def _bytes_to_array(raw: bytes, storage: _Storage, source: str, big_endian=False) -> np.ndarray:
    dtype = storage.stype.dtype.newbyteorder(">") if big_endian else storage.stype.dtype
    expected = storage.numel * dtype.itemsize
    if len(raw) < expected:
        raise CheckpointFormatError(
            f"{source}: storage {storage.key} truncated ({len(raw)} < {expected} bytes)")
    arr = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _materialise(t: _LazyTensor, source: str) -> np.ndarray:
    st = t.storage
    base_offset = 0
    if isinstance(st, _StorageView):
        base_offset, view_numel, st = st.offset, st.numel, st.root
    if st.data is None:
        raise CheckpointFormatError(f"{source}: storage {st.key} has no data")
    flat = st.data[base_offset:]
    if isinstance(t.storage, _StorageView):
        flat = flat[:view_numel]
    size, stride, offset = t.size, t.stride, t.offset
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"{source}: bad tensor geometry size={size} stride={stride}")
    # A tensor holds at most its storage's elements (huge sizes over zero strides would ask
    # for any amount of memory from a few bytes of file).
    if math.prod(size) > max(flat.size, 1):
        raise CheckpointFormatError(f"{source}: tensor of size {size} has more elements than its storage "
                                    f"({flat.size})")
    # as_strided does no bounds checks: make sure the last element lies inside the storage.
    if all(size):
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise CheckpointFormatError(
                f"{source}: tensor (offset {offset}, size {size}, stride {stride}) "
                f"reads past its storage of {flat.size} elements")
        flat = flat[offset:]
        item = flat.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat, shape=size, strides=tuple(s * item for s in stride), writeable=False)
    else:
        arr = np.empty(size, dtype=flat.dtype)
    arr = np.array(arr, copy=True, order="C")
    if st.stype.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _resolve(obj, source: str):
    """Replace lazy tensors by numpy arrays throughout a container tree."""
    if isinstance(obj, _LazyTensor):
        return _materialise(obj, source)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v, source)
        return out
    if isinstance(obj, list):
        return [_resolve(v, source) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, source) for v in obj)
    if isinstance(obj, (_Storage, _StorageView, _StorageType)):
        raise CheckpointFormatError(f"{source}: bare storages are not supported")
    return obj


# ---------------------------------------------------------------------------
# The two file layouts


def _load_legacy(f, source: str):
    storages: dict[str, _Storage] = {}
    magic = _unpickle(f, source, storages)
    if magic != LEGACY_MAGIC:
        raise CheckpointFormatError(f"{source}: not a PyTorch checkpoint (bad magic number)")
    protocol = _unpickle(f, source, storages)
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{source}: unsupported legacy protocol {protocol!r}")
    sys_info = _unpickle(f, source, storages)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj = _unpickle(f, source, storages)
    keys = _unpickle(f, source, storages)
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"{source}: storage key list missing")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointFormatError(f"{source}: unknown storage key {key!r}")
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(f"{source}: truncated before storage {key}")
        (numel,) = struct.unpack(">q" if big_endian else "<q", header)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"{source}: storage {key} has {numel} elements, expected {storage.numel}")
        raw = f.read(numel * storage.stype.dtype.itemsize)
        storage.data = _bytes_to_array(raw, storage, source, big_endian)
    return _resolve(obj, source)


def _load_zip(path: str):
    with zipfile.ZipFile(path) as zf:
        # PyTorch stores members uncompressed: far more bytes than the file holds is a bomb.
        inflated, real = sum(i.file_size for i in zf.infolist()), os.path.getsize(path)
        if inflated > 2 * real + 2**20:
            raise CheckpointFormatError(f"{path}: its members inflate to {inflated:,} bytes from {real:,}")
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointFormatError(f"{path}: zip checkpoint without a single <root>/data.pkl")
        root = pkl[0][: -len("data.pkl")]
        big_endian = False
        if root + "byteorder" in names:
            big_endian = zf.read(root + "byteorder").strip() == b"big"
        storages: dict[str, _Storage] = {}
        obj = _unpickle(io.BytesIO(zf.read(pkl[0])), path, storages)
        for key, storage in storages.items():
            member = f"{root}data/{key}"
            if member not in names:
                raise CheckpointFormatError(f"{path}: missing storage {member}")
            storage.data = _bytes_to_array(zf.read(member), storage, path, big_endian)
    return _resolve(obj, path)


def load(path: str | os.PathLike):
    """Load a .pth file; tensors come back as numpy arrays, containers as dicts/lists. A damaged
    or foreign file is a CheckpointFormatError naming it (an unsafe one UnsafeCheckpointError)."""
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            return _load_legacy(f, path)
    except (UnsafeCheckpointError, CheckpointFormatError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or garbled pickle fails in many ways
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a state dict (name -> numpy array) from a .pth file.

    Accepts a bare state dict or the common {"state_dict": ...} / {"model": ...}
    wrappers; non-array entries are dropped.
    """
    obj = load(path)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{os.fspath(path)}: expected a state dict, got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
