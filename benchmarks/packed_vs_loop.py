"""One training step of K students: a packed ensemble (chunked fused head loss) vs a Python loop over K HF Llamas.

Each configuration (mode, K) runs in a fresh subprocess so its peak memory is its own. A step is: forward,
forward KL to a random top-k + tail teacher target as training computes it (or CE), backward, AdamW step. Modes:
`loop` (fp32, K `LlamaForCausalLM`s one after the other, `distill_loss` through autograd), `packed` (fp32, the
training loop's `batch_loss`: packed trunk + fused chunked head with the closed-form gradient),
`packed_bf16` (the same under bf16 autocast). All modes start from identical weights and see identical data.

    python benchmarks/packed_vs_loop.py            # xs, K in 1 2 4 8, B=8, T=256, then a 5-step K=1 loss check (~3 min, 2 idle cores)
    python benchmarks/packed_vs_loop.py --quick    # smaller, for a smoke check
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

JEMALLOC = [p for p in ('/usr/lib/x86_64-linux-gnu/libjemalloc.so.2', '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2') if Path(p).exists()]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='xs', help='student size (STUDENT_SIZES)')
    p.add_argument('--K', type=int, nargs='+', default=[1, 2, 4, 8], help='ensemble sizes')
    p.add_argument('--B', type=int, default=8, help='sequences per member per step')
    p.add_argument('--T', type=int, default=256, help='tokens per sequence')
    p.add_argument('--vocab', type=int, default=49152, help='vocabulary size (SmolLM2: 49152)')
    p.add_argument('--steps', type=int, default=2, help='timed steps (after one warm-up step; the loss check uses all steps)')
    p.add_argument('--loss', default='kd', choices=['kd', 'ce'], help='KD against a random top-k target, or CE')
    p.add_argument('--topk', type=int, default=32, help='teacher top-k of the random KD target')
    p.add_argument('--chunk', type=int, default=0, help='head_loss tokens per chunk (0: automatic)')
    p.add_argument('--check-steps', type=int, default=5, help='steps of the K=1 loss check (bf16-packed vs fp32 loss)')
    p.add_argument('--modes', nargs='+', default=['loop', 'packed', 'packed_bf16'])
    p.add_argument('--malloc-conf', default='dirty_decay_ms:-1,muzzy_decay_ms:-1',
                   help="jemalloc MALLOC_CONF of the workers; the default never returns freed pages, the loop's best case "
                        "(the Makefile's 'retain:true,dirty_decay_ms:30000,muzzy_decay_ms:30000' page-faults big buffers again)")
    p.add_argument('--quick', action='store_true', help='small settings: B=4, T=128, K in 1 4, 1 timed step')
    p.add_argument('--no-gpu', action='store_true', help='skip the GPU section even when CUDA is available')
    p.add_argument('--json', default='', help='also write all results to this JSON file')
    p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # internal: "mode,K,device"
    a = p.parse_args(argv)
    if a.quick: a.B, a.T, a.K, a.steps, a.check_steps = 4, 128, [1, 4], 1, 3
    return a


def rss_mb():
    "Current resident set size (MB)."
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def reset_peak_rss():
    "Reset the kernel's peak RSS (VmHWM) of this process; False where not supported."
    try: Path('/proc/self/clear_refs').write_text('5'); return True
    except OSError: return False


def peak_rss_mb():
    "Peak RSS (MB) since the last reset (VmHWM), else since the start (ru_maxrss)."
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
    import resource; return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(dtype, device, n=2048, reps=3):
    "Measured GFLOP/s of an n x n x n matmul (best of reps)."
    import torch
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    best = float('inf')
    for _ in range(reps + 1):
        if device == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter(); a @ b
        if device == 'cuda': torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def worker(a):
    mode, K, device = a.worker.split(','); K = int(K)
    import torch
    from ens_distill.core import get_config
    from ens_distill.compute import step_flops
    from ens_distill.packed import PackedEnsemble, student_config
    from ens_distill.losses import distill_loss
    from ens_distill.train import batch_loss, _targets
    torch.manual_seed(0)
    cfg = student_config(a.size, a.vocab)
    rc = get_config('demo', objective='ce' if a.loss == 'ce' else 'fkl', alpha=1.)
    N = a.B * a.T
    g = torch.Generator().manual_seed(1)
    data = []
    pool = torch.randperm(a.vocab, generator=g)[:1024]  # tokens and targets from 1024 ids: the loss can fall in a few steps
    for _ in range(a.steps + 1):  # identical data for every mode: blocks [K,B,T], teacher top-k ids/log-probs/tail
        x = pool[torch.randint(0, len(pool), (K, a.B, a.T), generator=g)]
        ids = torch.stack([pool[torch.randperm(len(pool), generator=g)[:a.topk]] for _ in range(K * N)]).view(K, a.B, a.T, a.topk)
        lp = torch.log_softmax(3 * torch.randn(K, a.B, a.T, a.topk + 1, generator=g), -1)
        data.append([t.to(device) for t in (x, ids, lp[..., :-1].contiguous(), lp[..., -1].contiguous())])

    ens = PackedEnsemble(cfg, K).to(device)  # identical initial weights in every mode
    if mode == 'loop':
        models = ens.to_members(); del ens
        for m in models: m.to(device).train()
        params = [p for m in models for p in m.parameters()]
    else: params = list(ens.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.1)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=mode.endswith('bf16'))

    def step(x, ids, lp, tl):
        with amp:
            if mode == 'loop':  # each HF member on its own: full [B,T,V] logits, the library's loss through autograd
                tot = 0.
                for k, m in enumerate(models):
                    y = _targets(x[k]); n = (y != -100).sum()
                    out = distill_loss(m(x[k]).logits, y, ids[k], lp[k], tl[k], objective=rc.objective, alpha=rc.alpha)
                    loss = out['loss'].sum() / n
                    loss.backward(); tot += loss.item()
            else:  # the training loop's own step: packed trunk, fused chunked head (closed-form fkl/ce gradient)
                loss, _ = batch_loss(ens, x, (ids, lp, tl), rc, rc.alpha, chunk=a.chunk or None)
                loss.backward(); tot = loss.item()
        opt.step(); opt.zero_grad(set_to_none=True)
        return tot / K

    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    base = rss_mb(); reset_peak_rss()  # peak over warm-up and timed steps: an allocator that keeps freed pages hides later peaks
    losses = [step(*data[0])]  # warm-up (allocates the optimizer state)
    sync()
    if device == 'cuda': torch.cuda.reset_peak_memory_stats(); base_gpu = torch.cuda.memory_allocated() / 2**20
    times = []
    for d in data[1:]:
        t = time.perf_counter(); losses.append(step(*d)); sync(); times.append(time.perf_counter() - t)
    r = dict(mode=mode, K=K, device=device, size=a.size, B=a.B, T=a.T, s_per_step=min(times),
             tok_s=K * N / min(times), mem_mb=peak_rss_mb() - base, losses=losses,
             flops=step_flops(cfg, K, a.B * a.T, a.T))
    if device == 'cuda': r['gpu_mem_mb'] = torch.cuda.max_memory_allocated() / 2**20 - base_gpu
    print('RESULT ' + json.dumps(r), flush=True)


def run_worker(a, mode, K, device, size=None, steps=None):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    if JEMALLOC: env.update(LD_PRELOAD=JEMALLOC[0], MALLOC_CONF=a.malloc_conf)  # same allocator settings for every mode
    argv = [sys.executable, __file__, '--worker', f'{mode},{K},{device}', '--size', size or a.size, '--B', str(a.B),
            '--T', str(a.T), '--vocab', str(a.vocab), '--steps', str(steps or a.steps), '--loss', a.loss,
            '--topk', str(a.topk), '--chunk', str(a.chunk)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    res = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    if not res: raise RuntimeError(f'worker {mode} K={K} failed:\n{out.stderr[-3000:]}')
    return json.loads(res[-1][7:])


def table(rows, peaks, mem_key='mem_mb'):
    print(f"{'mode':<12}{'K':>3}{'s/step':>9}{'tok/s':>9}{'peak MB':>9}{'%peak':>7}{'final loss':>12}")
    for r in rows:
        pk = peaks['bf16' if r['mode'].endswith('bf16') else 'fp32']
        print(f"{r['mode']:<12}{r['K']:>3}{r['s_per_step']:>9.3f}{r['tok_s']:>9.0f}{r[mem_key]:>9.0f}"
              f"{100 * r['flops'] / r['s_per_step'] / 1e9 / pk:>6.1f}%{r['losses'][-1]:>12.5f}")


def ratios(rows):
    by = {(r['mode'], r['K']): r for r in rows}
    for K in sorted({r['K'] for r in rows}):
        lp, pk, bf = by.get(('loop', K)), by.get(('packed', K)), by.get(('packed_bf16', K))
        s = f'K={K}:'
        if lp and pk: s += (f" time loop/packed {lp['s_per_step'] / pk['s_per_step']:.2f}x,"
                            f" memory loop/packed {lp['mem_mb'] / max(pk['mem_mb'], 1):.1f}x,"
                            f" |loss packed-loop| {abs(pk['losses'][-1] - lp['losses'][-1]):.1e};")
        if lp and bf: s += (f" tok/s bf16-packed / fp32-loop {bf['tok_s'] / lp['tok_s']:.2f}x (goal >= 2),"
                            f" final loss bf16 vs fp32 {100 * abs(bf['losses'][-1] / lp['losses'][-1] - 1):.2f}%")
        print(s)


def main(a):
    import torch
    t0 = time.time()
    print(f"packed vs loop: size={a.size} vocab={a.vocab} B={a.B} T={a.T} loss={a.loss} steps=1+{a.steps} "
          f"threads={torch.get_num_threads()} jemalloc={a.malloc_conf if JEMALLOC else 'absent (glibc malloc)'}")
    peaks = dict(fp32=matmul_gflops(torch.float32, 'cpu'), bf16=matmul_gflops(torch.bfloat16, 'cpu'))
    print(f"CPU matmul peak (2048^3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    rows = [run_worker(a, mode, K, 'cpu') for K in a.K for mode in a.modes]
    table(rows, peaks); ratios(rows)
    chk = {m: run_worker(a, m, 1, 'cpu', steps=a.check_steps - 1)['losses'] for m in ['loop', 'packed', 'packed_bf16']}
    print(f"loss check, K=1, {a.check_steps} identical steps: " + ', '.join(f"{m} {l[0]:.4f} -> {l[-1]:.4f}" for m, l in chk.items())
          + f"; bf16-packed vs fp32-loop final loss {100 * abs(chk['packed_bf16'][-1] / chk['loop'][-1] - 1):.2f}% (goal < 1%),"
          f" packed vs loop {abs(chk['packed'][-1] - chk['loop'][-1]):.1e}")
    out = dict(cpu=rows, cpu_peaks=peaks, loss_check=chk)
    if torch.cuda.is_available() and not a.no_gpu:
        gpeaks = dict(fp32=matmul_gflops(torch.float32, 'cuda', 8192), bf16=matmul_gflops(torch.bfloat16, 'cuda', 8192))
        print(f"\nGPU {torch.cuda.get_device_name()}: matmul fp32 {gpeaks['fp32']:.0f} GFLOP/s, bf16 {gpeaks['bf16']:.0f} GFLOP/s")
        grows = [run_worker(a, mode, 8, 'cuda', size) for size in ['xs', 's'] for mode in a.modes]
        for size in ['xs', 's']:
            print(f'size {size}, K=8 (peak MB = GPU memory above the post-warm-up baseline)')
            rs = [r for r in grows if r['size'] == size]
            table(rs, gpeaks, 'gpu_mem_mb'); ratios(rs)
        out.update(gpu=grows, gpu_peaks=gpeaks)
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1))
    print(f'({time.time() - t0:.0f} s)')


if __name__ == '__main__':
    a = parse()
    worker(a) if a.worker else main(a)
