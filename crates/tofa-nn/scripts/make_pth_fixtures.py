#!/usr/bin/env python3
"""Writes the small `.pth` fixtures in tests/fixtures/nn/ without torch installed.

    python3 crates/tofa-nn/scripts/make_pth_fixtures.py

`tiny_legacy.pth` uses PyTorch's legacy (pre-1.6) format, `tiny_zip.pth` the zip format, both
holding the same state dict, as torch.save would write it:
    a: float32 [2, 3] = 0..5
    c: float32 [4] = 12..15, a view at offset 2 into a 6-element storage
    n: int64 [] = 7   (like num_batches_tracked)
    t: float32 [3, 2], the transpose of `a` (strides (1, 3), sharing a's storage)
"""
import collections
import io
import pathlib
import pickle
import struct
import sys
import types
import zipfile

OUT = pathlib.Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "nn"

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


class FloatStorage:
    pass


class LongStorage:
    pass


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


FloatStorage.__module__ = LongStorage.__module__ = "torch"
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.FloatStorage, torch.LongStorage, utils._rebuild_tensor_v2 = FloatStorage, LongStorage, _rebuild_tensor_v2
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


class Storage:
    def __init__(self, key, stype, fmt, values):
        self.key, self.stype, self.fmt, self.values = key, stype, fmt, values

    def data(self):
        return struct.pack("<" + self.fmt * len(self.values), *self.values)


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        s, off, size, stride = self.args
        return (_rebuild_tensor_v2, (s, off, size, stride, False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.stype, obj.key, "cpu", len(obj.values))
        return None


fa = Storage("11", FloatStorage, "f", [float(i) for i in range(6)])
fc = Storage("22", FloatStorage, "f", [10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
ln = Storage("33", LongStorage, "q", [7])
sd = collections.OrderedDict(
    [("a", Tensor(fa, 0, (2, 3), (3, 1))), ("c", Tensor(fc, 2, (4,), (1,))), ("n", Tensor(ln, 0, (), ())), ("t", Tensor(fa, 0, (3, 2), (1, 3)))]
)


def dump(obj, f):
    Pickler(f, protocol=2).dump(obj)


OUT.mkdir(parents=True, exist_ok=True)
with open(OUT / "tiny_legacy.pth", "wb") as f:
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    dump(sd, f)
    storages = [fa, fc, ln]
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
        f.write(struct.pack("<q", len(s.values)))
        f.write(s.data())

with zipfile.ZipFile(OUT / "tiny_zip.pth", "w", zipfile.ZIP_STORED) as z:
    buf = io.BytesIO()
    dump(sd, buf)
    z.writestr("archive/data.pkl", buf.getvalue())
    for s in (fa, fc, ln):
        z.writestr(f"archive/data/{s.key}", s.data())
    z.writestr("archive/version", "3\n")
print("wrote", OUT)
