"""Next-token latency (ms/token, batch 1) and throughput (tokens/s, batch 16) with a KV cache for the teacher,
a single student, a packed ensemble, a Python loop over K HF members (K in {1,2,4,8}), optionally one larger
student (`--large`) and the packed ensemble split over several processes (`--procs 2`: member-parallel decoding,
gloo on CPU, each rank holds K/procs members and all-reduces one [B,V] distribution per token). Prints ratios
measured in one run and writes them to reports/latency.json (read by the report's win conditions).

    python benchmarks/latency.py [--size xs|p8f672g2] [--large p20f1280g2] [--procs 2] [--ks 1,2,4,8] [--new 32]
                                 [--prompt 64] [--teacher smollm2-135m-instruct] [--out reports/latency.json]

Pruned sizes (`p<L>[f<F>][g<G>]`) take the teacher's shapes; weights are random (latency does not depend on them).
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import torch
from transformers import DynamicCache
from ens_distill.packed import PackedEnsemble, generate, combine
from ens_distill.prune import member_config
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

def pworker(a):
    "One rank of member-parallel decoding: its share of the K members, ms/token at batch 1 and `a.batch` (rank 0 writes)."
    from ens_distill.parallel import init_dist, Comm, member_split, shard_members, parallel_generate
    init_dist('cpu'); comm = Comm(); torch.set_num_threads(max(1, a.cores // comm.world))
    teacher, _ = load_teacher(a.teacher); V = teacher.get_input_embeddings().weight.shape[0]
    out = {}
    for K in map(int, a.ks.split(',')):
        if K < comm.world: continue
        torch.manual_seed(0); k0, k1 = member_split(K, comm.world)[comm.rank]
        ens = shard_members(PackedEnsemble(member_config(a.size, teacher.config), K), k0, k1).eval()
        for B in (1, a.batch):
            ids = torch.randint(0, V, (B, a.prompt), generator=torch.Generator().manual_seed(0))
            with torch.no_grad(): t = per_token(lambda x, n: (parallel_generate(ens, x, comm, K, max_new_tokens=n), comm.barrier()), ids, a.new)
            out[f'{K},{B}'] = 1e3 * t
    if comm.rank == 0: Path(a.result).write_text(json.dumps(out))
    torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None

def parallel_rows(a)->list:
    "Launch `pworker` on a.procs processes (torchrun, OMP threads split); rows for the report."
    res = Path(f'/tmp/ens_distill_latency_{os.getpid()}.json')
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, a.cores // a.procs)))
    args = [f'--{k}={v}' for k, v in vars(a).items() if k in ('size', 'ks', 'new', 'prompt', 'teacher', 'batch', 'cores')]
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={a.procs}', __file__,
                    '--pworker', f'--result={res}', *args], env=env, check=True)
    out = json.loads(res.read_text()); res.unlink()
    return [dict(system=f'parallel K{k} x{a.procs} procs', method='parallel', K=int(k), size=a.size, batch=int(b), ms_per_token=v)
            for kb, v in out.items() for k, b in [kb.split(',')]]

def main():
    ap = argparse.ArgumentParser(); a = ap.add_argument
    a('--size', default='xs'); a('--large', default=''); a('--ks', default='1,2,4,8'); a('--new', type=int, default=32)
    a('--prompt', type=int, default=64); a('--teacher', default='smollm2-135m-instruct'); a('--batch', type=int, default=16)
    a('--procs', type=int, default=1); a('--cores', type=int, default=os.cpu_count()); a('--out', default='reports/latency.json')
    a('--pworker', action='store_true'); a('--result', default='')
    args = ap.parse_args()
    if args.pworker: return pworker(args)
    torch.manual_seed(0)
    teacher, tok = load_teacher(args.teacher)
    V = teacher.get_input_embeddings().weight.shape[0]
    res = dict(size=args.size, large=args.large, threads=torch.get_num_threads(), prompt=args.prompt, new=args.new, rows=[])
    row = lambda system, method, K, size, B, t: res['rows'].append(dict(system=system, method=method, K=K, size=size, batch=B, ms_per_token=1e3 * t))
    for B in (1, args.batch):
        ids = torch.randint(0, V, (B, args.prompt))
        t_teacher = per_token(lambda x, n: hf_decode([teacher], x, n), ids, args.new); row('teacher', 'teacher', 1, 'teacher', B, t_teacher)
        if args.large:
            big = PackedEnsemble(member_config(args.large, teacher.config), 1).eval()
            with torch.no_grad(): tb = per_token(lambda x, n: generate(big, x, n), ids, args.new)
            row(f'single {args.large}', 'single', 1, args.large, B, tb)
            print(f'B={B:2d} single {args.large}: {1e3*tb:7.2f} ms/step ({B/tb:8.1f} tok/s)', flush=True)
        for K in map(int, args.ks.split(',')):
            ens = PackedEnsemble(member_config(args.size, teacher.config), K).eval()
            members = ens.to_members()
            with torch.no_grad():
                tp = per_token(lambda x, n: generate(ens, x, n), ids, args.new)
                tl = per_token(lambda x, n: hf_decode(members, x, n), ids, args.new)
            row(f'packed K{K}', 'packed', K, args.size, B, tp); row(f'loop K{K}', 'loop', K, args.size, B, tl)
            print(f'B={B:2d} K={K}: packed {1e3*tp:7.2f} ms/step ({B/tp:8.1f} tok/s)  loop {1e3*tl:7.2f} ms/step '
                  f'({B/tl:8.1f} tok/s)  loop/packed {tl/tp:5.2f}  packed/teacher {tp/t_teacher:5.2f}', flush=True)
        print(f'B={B:2d} teacher: {1e3*t_teacher:7.2f} ms/step ({B/t_teacher:8.1f} tok/s)')
    if args.procs > 1:
        pr = parallel_rows(args); res['rows'] += pr
        packed = {(r['K'], r['batch']): r['ms_per_token'] for r in res['rows'] if r['method'] == 'packed'}
        for r in pr: print(f"B={r['batch']:2d} K={r['K']}: {args.procs} processes {r['ms_per_token']:7.2f} ms/step, "
                           f"packed 1 process / parallel {packed[(r['K'], r['batch'])] / r['ms_per_token']:5.2f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=1))
    print('written', args.out)

if __name__ == '__main__': main()
