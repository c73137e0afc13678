"""Next-token latency (ms/token, batch 1) and throughput (tokens/s, batch 16) with a KV cache for the teacher,
a single student, a packed ensemble and a Python loop over K HF members, K in {1,2,4,8}. Prints ratios measured in
one run and writes them to reports/latency.json (read by the report's win conditions).

    python benchmarks/latency.py [--size xs] [--ks 1,2,4,8] [--new 32] [--prompt 64] [--teacher smollm2-135m-instruct]
"""
import argparse, json, os, time
from pathlib import Path
import torch
from transformers import DynamicCache
from ens_distill.packed import PackedEnsemble, student_config, generate, combine
from ens_distill.teacher import load_teacher

def hf_decode(models, ids, n):
    "Greedy decode from the mixture of HF models, each with its own KV cache (the loop ensemble)."
    caches = [DynamicCache() for _ in models]; x = ids
    for _ in range(n):
        lp = torch.stack([m(x, past_key_values=c, use_cache=True).logits[:, -1].float().log_softmax(-1) for m, c in zip(models, caches)])
        x = combine(lp, 'mean').argmax(-1, keepdim=True)

def timed(f, reps=2):
    "Best wall time of `reps` calls (after one warm-up)."
    f(); best = float('inf')
    for _ in range(reps): t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t)
    return best

def per_token(f, ids, new):
    "Seconds per decoded token: time(prompt + new tokens) - time(prompt + 1 token), over new - 1 tokens."
    return (timed(lambda: f(ids, new)) - timed(lambda: f(ids, 1))) / (new - 1)

def main():
    ap = argparse.ArgumentParser(); a = ap.add_argument
    a('--size', default='xs'); a('--ks', default='1,2,4,8'); a('--new', type=int, default=32); a('--prompt', type=int, default=64)
    a('--teacher', default='smollm2-135m-instruct'); a('--batch', type=int, default=16); a('--out', default='reports/latency.json')
    args = ap.parse_args()
    torch.manual_seed(0)
    teacher, tok = load_teacher(args.teacher)
    V = teacher.get_input_embeddings().weight.shape[0]
    res = dict(size=args.size, threads=torch.get_num_threads(), prompt=args.prompt, new=args.new, rows=[])
    for B in (1, args.batch):
        ids = torch.randint(0, V, (B, args.prompt))
        t_teacher = per_token(lambda x, n: hf_decode([teacher], x, n), ids, args.new)
        row = dict(batch=B, teacher_ms=1e3 * t_teacher)
        for K in map(int, args.ks.split(',')):
            ens = PackedEnsemble(student_config(args.size, V), K).eval()
            members = ens.to_members()
            with torch.no_grad():
                tp = per_token(lambda x, n: generate(ens, x, n), ids, args.new)
                tl = per_token(lambda x, n: hf_decode(members, x, n), ids, args.new)
            row[f'packed_K{K}_ms'], row[f'loop_K{K}_ms'] = 1e3 * tp, 1e3 * tl
            print(f'B={B:2d} K={K}: packed {1e3*tp:7.2f} ms/step ({B/tp:8.1f} tok/s)  loop {1e3*tl:7.2f} ms/step '
                  f'({B/tl:8.1f} tok/s)  loop/packed {tl/tp:5.2f}  packed/teacher {tp/t_teacher:5.2f}', flush=True)
        print(f'B={B:2d} teacher: {1e3*t_teacher:7.2f} ms/step ({B/t_teacher:8.1f} tok/s)')
        res['rows'].append(row)
    res['rows'] = [dict(system=name, method=name.split()[0], K=int(name.split('K')[-1]) if 'K' in name else 1, size=args.size,
                        batch=r['batch'], ms_per_token=v)
                   for r in res['rows'] for name, v in [('teacher', r['teacher_ms'])] +
                   [(f"{k.split('_')[0]} K{k.split('_K')[1][:-3]}", v) for k, v in r.items() if k.endswith('_ms') and k != 'teacher_ms']]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=1))
    print('written', args.out)

if __name__ == '__main__': main()
