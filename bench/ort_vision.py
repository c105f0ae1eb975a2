"""onnxruntime (PyPI) runner for `cargo xtask bench-vision`: EfficientNet-Lite0's ONNX export
classifying one image file end to end — Pillow decodes, resizes (shorter side 256, bilinear)
and centre-crops 224, numpy normalises (x - 127) / 128, onnxruntime runs the model — timed like
`amphi bench --image`.

    python ort_vision.py ONNX_FILE MODEL_DIR IMAGE THREADS OUT.json   (THREADS 0: all threads)
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

WARMUP, MIN_RUNS, MAX_RUNS, BUDGET_MS = 2, 3, 15, 4000


def preprocess(path):
    image = Image.open(path).convert("RGB")
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = 256 * long // short
    size = (256, new_long) if w <= h else (new_long, 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def main():
    model, model_dir, image, threads, out_path = sys.argv[1:6]
    threads = int(threads)
    id2label = json.load(open(f"{model_dir}/config.json"))["id2label"]
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    label = f"onnxruntime {ort.__version__} ({'1 thread' if threads == 1 else 'all threads'})"

    def classify():
        logits = session.run(None, {name: preprocess(image)})[0][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:5]
        return [{"label": id2label[str(i)], "score": float(p[i])} for i in top]

    top5 = classify()
    for _ in range(1, WARMUP):
        classify()
    ms = []
    started = time.perf_counter()
    while len(ms) < MIN_RUNS or (
        len(ms) < MAX_RUNS and (time.perf_counter() - started) * 1e3 < BUDGET_MS
    ):
        t = time.perf_counter()
        classify()
        ms.append((time.perf_counter() - t) * 1e3)
    s = sorted(ms)
    out = {"runtime": label, "ms": ms, "median": s[len(s) // 2], "min": s[0], "max": s[-1], "top5": top5}
    print(f"{label}: median {out['median']:.2f} ms ({s[0]:.2f}–{s[-1]:.2f}, {len(ms)} runs)", file=sys.stderr)
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
