"""Member-parallel throughput: training tokens/s of K members on 1 process vs N processes (independent: no
communication; ncl: one all-reduce of k+1 floats per token per head chunk), perplexity and generation across
processes, and the bytes each rank communicates per token in each mode. Teacher top-k targets are synthetic
(random, fixed seed) so any vocabulary size can be timed without a teacher. On CPU (gloo) the processes split the
cores (OMP threads = cores // N); when CUDA is available a GPU section runs 1..n_gpus processes (NCCL), one per GPU.

    python benchmarks/parallel.py [--K 4] [--size xs] [--vocab 49152] [--steps 4] [--procs 1,2] [--repeats 2] [--out reports/parallel.json]

Each process count is launched `--repeats` times, interleaved, and the best tokens/s is kept.
"""
import argparse, json, math, os, subprocess, sys, time
from dataclasses import replace
from pathlib import Path
import torch

class RandomTopK:
    "A stand-in for `TopKCache`: deterministic random teacher top-k (ids, log-probs, tail) per block."
    def __init__(self, N, T, V, k, seed=0): self.N, self.T, self.V, self.k, self.seed = N, T, V, k, seed
    def __len__(self): return self.N
    def get(self, idx):
        out = []
        for i in torch.as_tensor(idx).flatten().tolist():
            g = torch.Generator().manual_seed(self.seed * 100_003 + i)
            ids = torch.randint(0, self.V, (self.T, self.k), generator=g)
            lp = torch.log_softmax(torch.randn(self.T, self.k + 1, generator=g) * 2, -1)
            out.append((ids, lp[:, :-1], lp[:, -1]))
        return tuple(torch.stack(t) for t in zip(*out))

def worker(a):
    "One rank: train its members for a.steps steps (independent, then ncl), then perplexity and generation."
    from ens_distill.core import get_config
    from ens_distill.packed import PackedEnsemble, student_config, chunk_size
    from ens_distill.train import Plan, train
    from ens_distill.parallel import init_dist, Comm, member_split, shard_members, ncl_mean_fn, parallel_perplexity, parallel_generate
    dev = init_dist(a.device); comm = Comm()
    if dev.type == 'cpu': torch.set_num_threads(max(1, a.cores // comm.world))
    k0, k1 = member_split(a.K, comm.world)[comm.rank]; sizes = [b - c for c, b in member_split(a.K, comm.world)]
    torch.manual_seed(0); full = PackedEnsemble(student_config(a.size, a.vocab), a.K)
    g = torch.Generator().manual_seed(0); tokens = torch.randint(0, a.vocab, (64, a.T), generator=g)
    cache = RandomTopK(len(tokens), a.T, a.vocab, 8)
    res = dict(world=comm.world, device=str(dev), threads=torch.get_num_threads())
    for mode in ('independent', 'ncl'):
        cfg = get_config('smoke', size=a.size, K=a.K, batch_size=a.B, device=str(dev), dtype=a.dtype, ckpt_every=0,
                         log_every=10**6, tokens_per_member=a.steps * a.B * a.T, warmup_frac=0.)
        plan = Plan([torch.arange(len(tokens))] * (k1 - k0), member_ids=list(range(k0, k1)), shared=mode == 'ncl',
                    ncl_lambda=0.5 if mode == 'ncl' else 0.)
        if mode == 'ncl': plan = replace(plan, ncl_mean=ncl_mean_fn(comm, a.K), chunk=chunk_size(a.K, a.vocab))
        ens = shard_members(full, k0, k1)
        train(ens, tokens, cache, replace(cfg, tokens_per_member=a.B * a.T), plan, progress=False)  # warm-up step
        comm.barrier(); b0 = dict(comm.bytes); t = time.perf_counter()
        s = train(ens, tokens, cache, cfg, plan, progress=False)
        if dev.type == 'cuda': torch.cuda.synchronize()
        comm.barrier(); dt = time.perf_counter() - t
        res[f'train_{mode}_tok_s'] = a.K * s['tokens_per_member'] / dt                          # all members' tokens
        res[f'train_{mode}_bytes_per_token'] = (comm.bytes.get('ncl', 0) - b0.get('ncl', 0)) / (a.steps * a.B * a.T)
    ens.eval(); comm.barrier(); t = time.perf_counter()
    parallel_perplexity(ens, tokens[:16], comm, sizes, batch_size=a.B); comm.barrier()
    res['ppl_tok_s'] = 16 * (a.T - 1) / (time.perf_counter() - t)
    t = time.perf_counter(); parallel_generate(ens, tokens[:a.B, :16], comm, a.K, max_new_tokens=16); comm.barrier()
    res['generate_tok_s'] = a.B * 16 / (time.perf_counter() - t)
    rep = comm.report()
    res.update(ppl_bytes_per_token=rep.get('ppl', {}).get('bytes_per_token') or 0.,
               generate_bytes_per_token=rep.get('generate', {}).get('bytes_per_token') or 0.)
    if comm.rank == 0: Path(a.result).write_text(json.dumps(res))
    if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()

def launch(a, n, device):
    "Run the worker under torchrun with n processes; its rank-0 results."
    res = Path(f'/tmp/ens_distill_parallel_{os.getpid()}_{device}_{n}.json')
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, a.cores // n) if device == 'cpu' else 4))
    args = [f'--{k}={v}' for k, v in vars(a).items() if k not in ('procs', 'out', 'worker', 'device', 'result', 'repeats')]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', __file__, '--worker',
           f'--device={device}', f'--result={res}', *args]
    subprocess.run(cmd, env=env, check=True)
    out = json.loads(res.read_text()); res.unlink(); return out

def best_of(a, ns, device):
    "Per process count, the best throughput of `a.repeats` interleaved launches (shared machines are noisy)."
    runs = [[launch(a, n, device) for n in ns] for _ in range(a.repeats)]
    return [{k: (max(r[i][k] for r in runs) if k.endswith('tok_s') else v) for k, v in runs[0][i].items()} for i in range(len(ns))]

def table(rows, K):
    "Print throughput per process count and the speed-up over one process."
    base = rows[0]
    for r in rows:
        print(f"{r['device']:>6} x{r['world']} ({r['threads']} thr): train indep {r['train_independent_tok_s']:9.0f} tok/s "
              f"(x{r['train_independent_tok_s']/base['train_independent_tok_s']:.2f})  ncl {r['train_ncl_tok_s']:9.0f} tok/s "
              f"(x{r['train_ncl_tok_s']/base['train_ncl_tok_s']:.2f}, {r['train_ncl_bytes_per_token']:.0f} B/tok)  "
              f"ppl {r['ppl_tok_s']:8.0f} tok/s ({r['ppl_bytes_per_token']:.0f} B/tok)  "
              f"generate {r['generate_tok_s']:6.1f} tok/s ({r['generate_bytes_per_token']:.0f} B/tok)", flush=True)

def main():
    ap = argparse.ArgumentParser(); add = ap.add_argument
    add('--K', type=int, default=4); add('--size', default='xs'); add('--vocab', type=int, default=49152)
    add('--T', type=int, default=128); add('--B', type=int, default=4); add('--steps', type=int, default=4)
    add('--dtype', default='fp32'); add('--cores', type=int, default=os.cpu_count()); add('--procs', default='1,2')
    add('--out', default=None); add('--repeats', type=int, default=2); add('--worker', action='store_true'); add('--device', default='cpu'); add('--result', default='')
    a = ap.parse_args()
    if a.worker: return worker(a)
    out = dict(args={k: v for k, v in vars(a).items() if k not in ('worker', 'result', 'device')}, cpu=[], gpu=[])
    print(f'K={a.K} {a.size} members, vocab {a.vocab}, {a.steps} steps of {a.B}x{a.T} tokens per member, {a.cores} CPU cores')
    out['cpu'] = best_of(a, [n for n in map(int, a.procs.split(',')) if n <= a.K], 'cpu')
    table(out['cpu'], a.K)
    if torch.cuda.is_available():
        ns = sorted({n for n in (1, 2, 4, 8, torch.cuda.device_count()) if n <= min(a.K, torch.cuda.device_count())})
        out['gpu'] = best_of(a, ns, 'cuda')
        table(out['gpu'], a.K)
    if a.out: Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(out, indent=1)); print('written', a.out)

if __name__ == '__main__': main()
