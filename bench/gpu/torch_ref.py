"""PyTorch (transformers' BertModel) on the same weights and token ids as `amphi bench`'s runs:
the reference in f64 on the CPU (mean pooling + L2 normalisation) that every amphi embedding is
checked against, and PyTorch's own times with CUDA in f32 (TF32 off) and f16. Writes
compare.json beside the first result and prints one JSON line per shape.

    python3 torch_ref.py MODEL_DIR INPUTS.json AMPHI_RESULT.json...
"""
import sys, json, time, torch
from transformers import AutoModel
model_dir, inputs = sys.argv[1], json.load(open(sys.argv[2]))['shapes']
results = [json.load(open(p)) for p in sys.argv[3:]]
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
def embed(m, ids, dev):
    ids = torch.tensor(ids, device=dev)
    with torch.no_grad():
        h = m(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids)).last_hidden_state
    p = h.float().mean(1)
    return torch.nn.functional.normalize(p, dim=1)
def timed(m, ids, dev, n=30):
    for _ in range(3): embed(m, ids, dev)
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t = time.perf_counter(); e = embed(m, ids, dev); e.cpu(); ts.append((time.perf_counter() - t) * 1e3)
    ts.sort(); return ts[len(ts) // 2], ts[0], ts[-1]
def load(dtype):
    try:
        return AutoModel.from_pretrained(model_dir, dtype=dtype).eval()
    except TypeError:
        return AutoModel.from_pretrained(model_dir, torch_dtype=dtype).eval()
ref64 = load(torch.float64)
m32 = load(torch.float32).cuda()
m16 = load(torch.float16).cuda()
print('torch', torch.__version__, torch.cuda.get_device_name(0), '(TF32 off)')
rows = []
for i, s in enumerate(inputs):
    ref = embed(ref64, s['ids'], 'cpu').double()
    line = {'shape': f"{s['batch']}x{s['seq']}"}
    for r in results:
        row = r['results'][i]
        got = torch.tensor(row['embeddings'], dtype=torch.float64)
        line[r['runtime']] = {'median_ms': round(row['median'], 3), 'min_ms': round(row['min'], 3), 'max_ms': round(row['max'], 3),
                              'max_abs_vs_torch_f64': float((got - ref).abs().max()),
                              'min_cosine': float((got * ref).sum(1).min())}
    for name, m in [('torch cuda f32', m32), ('torch cuda f16', m16)]:
        med, lo, hi = timed(m, s['ids'], 'cuda')
        got = embed(m, s['ids'], 'cuda').double().cpu()
        line[name] = {'median_ms': round(med, 3), 'min_ms': round(lo, 3), 'max_ms': round(hi, 3),
                      'max_abs_vs_torch_f64': float((got - ref).abs().max()), 'min_cosine': float((got * ref).sum(1).min())}
    rows.append(line); print(json.dumps(line))
json.dump(rows, open(sys.argv[3].rsplit('/', 1)[0] + '/compare.json', 'w'), indent=1)
