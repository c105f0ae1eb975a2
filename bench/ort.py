"""onnxruntime (PyPI) runner for `cargo xtask bench`: the fp32 ONNX export on the shapes of
inputs.json, with one intra-op thread or all of them, timed like `amphi bench`.

    python ort.py INPUTS.json ONNX_FILE THREADS OUT.json [--step]   (THREADS 0: onnxruntime's default)

With --step, a harness paces the runs as it does `amphi bench --step`: `ok` once loaded, then
commands on stdin, one per line (`warm I`, `run I`, `done I`), each answered with `ok`; the results
are written at the end of stdin. The all-threads session then does not spin its idle workers,
which would otherwise keep a core busy while the other runtimes take their turn.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

WARMUP, MIN_RUNS, MAX_RUNS, BUDGET_MS = 2, 3, 15, 4000


def main():
    inputs_path, model, threads, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    step = "--step" in sys.argv[5:]
    shapes = json.load(open(inputs_path))["shapes"]
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if step and threads != 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    label = f"onnxruntime {ort.__version__} ({'1 thread' if threads == 1 else 'all threads'})"

    def embed(shape):
        ids = np.array(shape["ids"], dtype=np.int64)
        hidden = session.run(
            ["last_hidden_state"],
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            },
        )[0]
        pooled = hidden.mean(axis=1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    embeddings = {}
    times = {i: [] for i in range(len(shapes))}
    rows = []

    def warm(i):
        embeddings[i] = embed(shapes[i])
        for _ in range(1, WARMUP):
            embed(shapes[i])

    def run(i):
        t = time.perf_counter()
        embed(shapes[i])
        times[i].append((time.perf_counter() - t) * 1e3)

    def done(i):
        ms = times[i]
        s = sorted(ms)
        row = {
            "batch": shapes[i]["batch"],
            "seq": shapes[i]["seq"],
            "ms": ms,
            "median": s[len(s) // 2],
            "min": s[0],
            "max": s[-1],
            "embeddings": embeddings[i].tolist(),
        }
        print(
            f"{label}: {row['batch']}x{row['seq']}: median {row['median']:.2f} ms "
            f"({row['min']:.2f}–{row['max']:.2f}, {len(ms)} runs)",
            file=sys.stderr,
        )
        rows.append(row)

    if step:
        print("ok", flush=True)
        for line in sys.stdin:
            command, index = line.split()
            {"warm": warm, "run": run, "done": done}[command](int(index))
            print("ok", flush=True)
    else:
        for i in range(len(shapes)):
            warm(i)
            started = time.perf_counter()
            while len(times[i]) < MIN_RUNS or (
                len(times[i]) < MAX_RUNS and (time.perf_counter() - started) * 1e3 < BUDGET_MS
            ):
                run(i)
            done(i)
    json.dump({"runtime": label, "results": rows}, open(out_path, "w"))


if __name__ == "__main__":
    main()
