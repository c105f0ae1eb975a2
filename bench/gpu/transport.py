"""Moves a BERT-family model's weights to a machine that can only take a small upload: `pack`
stores every 2-D weight as int8 rows with one f32 scale per row (a quarter of the size), `unpack`
writes an f32 safetensors folder from it. The weights then differ from the original by the
rounding, but amphi and PyTorch run the same ones there, which is what a side-by-side needs.

    python3 transport.py pack MODEL_DIR/model.safetensors weights.npz        (numpy)
    python3 transport.py unpack DIR_WITH_weights.npz_AND_CONFIG OUT_DIR      (numpy, torch, safetensors)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np


def pack(src, dst):
    raw = open(src, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header, base = json.loads(raw[8 : 8 + n]), 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[t["dtype"]]
        a = np.frombuffer(raw[base + start : base + end], dtype=dtype).reshape(t["shape"])
        if a.dtype == np.float32 and a.ndim == 2 and a.shape[0] >= 32:
            scale = np.abs(a).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1
            out[name + ".q8"] = np.round(a / scale).astype(np.int8)
            out[name + ".scale"] = scale.astype(np.float32)
        else:
            out[name] = a
    np.savez(dst, **out)


def unpack(src, dst):
    import torch
    from safetensors.torch import save_file

    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if f != "weights.npz":
            (shutil.copytree if os.path.isdir(p) else shutil.copy)(p, os.path.join(dst, f))
    z = np.load(os.path.join(src, "weights.npz"))
    tensors = {}
    for k in z.files:
        if k.endswith(".scale"):
            continue
        if k.endswith(".q8"):
            name = k[: -len(".q8")]
            tensors[name] = torch.from_numpy(z[k].astype(np.float32) * z[name + ".scale"])
        else:
            tensors[k] = torch.from_numpy(np.ascontiguousarray(z[k]))
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    print("unpacked", len(tensors), "tensors")


if __name__ == "__main__":
    {"pack": pack, "unpack": unpack}[sys.argv[1]](sys.argv[2], sys.argv[3])
