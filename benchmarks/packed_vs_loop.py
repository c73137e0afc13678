"""One training step of K members: a packed ensemble (chunked fused head loss) vs a Python loop over K HF Llamas.

Members have the study's shapes, cut from SmolLM2-135M (hidden 576, 9/3 heads, vocabulary 49,152, tied head):
`p8f672g2` (the study's member, 14.0M non-embedding parameters) and `p2` by default, each with its own trained head
or with the teacher's head frozen and shared (`--frozen`). Weights are random: only shapes matter for speed.

A step is: forward, forward KL to a random top-k + tail teacher target as training computes it, backward, AdamW
step. Modes: `loop` (K `LlamaForCausalLM`s one after the other, full logits, `distill_loss` through autograd) and
`packed` (the training loop's own `batch_loss`: packed trunk + fused chunked head with the closed-form gradient),
each in fp32 and under bf16 autocast (`_bf16`); `packed_bf16c` adds `torch.compile` of the layers (cfg.compile).
Every configuration runs in a fresh subprocess, so its peak memory is its own; all start from identical weights and
see identical data. Printed, all measured in this run: the bf16 GEMM rate of each of the step's GEMM shapes and the
best of them (the peak), each step's FLOP rate (`compute.step_flops`, head included) and its share of that peak,
loop/packed time and peak memory, tokens/s, and a 5-step bf16-vs-fp32 loss check.

What paid (p8f672g2, K=4, B=8, T=256, 2 cores with AMX; member-tokens/s of the packed bf16 step, measured one
change at a time): 1,943 at the start of issue #16; fused AdamW (foreach -> fused) 0.43 -> 0.19 s per step;
one ~1 GiB head chunk instead of ~341-token chunks (the fp32 [K,V,d] weight gradient is written once instead of
being added six times) 2,079 -> 2,646; the closed-form softmax gradient on 16-row slabs whose fp32 work stays in
L2 (three times faster than whole-chunk passes) -> 3,016; `torch.compile` of the layers (norms, rotary, SiLU fused)
-> 3,555. What did not: compiling the softmax-gradient pass with inductor (0.36 s vs 0.19 s for the slabs, it
recomputes exp); larger or smaller slabs (32-64 rows: 0.26 s, 4 rows: 0.23 s); the math attention backend (within
noise of the flash kernel). The head's [N,576]x[576,49152] GEMM runs at ~40% of the best GEMM rate because its
output goes through memory, and it is 65% of the step's FLOPs: that, not the trunk, bounds the step's share of peak.

    python benchmarks/packed_vs_loop.py                  # the full table (~10 min on 2 idle cores); --json to save it
    python benchmarks/packed_vs_loop.py --quick          # a smoke check (tiny shapes, ~1 min)
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

JEMALLOC = [p for p in ('/usr/lib/x86_64-linux-gnu/libjemalloc.so.2', '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2') if Path(p).exists()]
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               intermediate_size=1536, head_dim=64, tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act='silu')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', nargs='+', default=['p8f672g2', 'p2'], help='member sizes (pruned p<L>[f<F>][g<G>] or STUDENT_SIZES)')
    p.add_argument('--K', type=int, nargs='+', default=[1, 2, 4, 8], help='ensemble sizes (first size; others: --K2)')
    p.add_argument('--K2', type=int, nargs='+', default=[4, 8], help='ensemble sizes of the other sizes')
    p.add_argument('--B', type=int, default=8, help='sequences per member per step')
    p.add_argument('--T', type=int, default=256, help='tokens per sequence')
    p.add_argument('--steps', type=int, default=2, help='timed steps (after one warm-up step)')
    p.add_argument('--topk', type=int, default=32, help='teacher top-k of the random KD target')
    p.add_argument('--check-steps', type=int, default=5, help='steps of the bf16-vs-fp32 loss check (K=1, first size)')
    p.add_argument('--modes', nargs='+', default=['loop', 'packed', 'loop_bf16', 'packed_bf16', 'packed_bf16c'])
    p.add_argument('--frozen', nargs='+', default=['no', 'yes'], help="'no': members train their heads; 'yes': the teacher's head frozen and shared")
    p.add_argument('--quick', action='store_true', help='tiny shapes: size tiny with a 4k vocabulary, B=2, T=64, K in 1 4')
    p.add_argument('--no-gpu', action='store_true', help='skip the GPU section even when CUDA is available')
    p.add_argument('--json', default='', help='also write all results to this JSON file')
    p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # internal: "mode,K,device,size,frozen"
    a = p.parse_args(argv)
    if a.quick: a.sizes, a.B, a.T, a.K, a.K2, a.steps, a.check_steps, a.frozen = ['tiny'], 2, 64, [1, 4], [], 1, 3, ['no', 'yes']
    return a


def member_cfg(size, quick=False):
    "One member's LlamaConfig: a cut of the SmolLM2 shape, or a STUDENT_SIZES preset."
    from transformers import LlamaConfig
    from ens_distill.prune import member_config
    tc = LlamaConfig(**{**SMOLLM2, **(dict(vocab_size=4096) if quick else {})})
    c = member_config(size, tc)
    c.vocab_size = tc.vocab_size
    return c


def peak_rss_mb():
    "Peak RSS (MB) since the last reset (VmHWM)."
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
    import resource; return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    try: Path('/proc/self/clear_refs').write_text('5')
    except OSError: pass


def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def gemm_shapes(c, N):
    "The step's matmuls of one member over N tokens: name -> (M, K, N) of [M,K] x [K,N]."
    d, F, V = c.hidden_size, c.intermediate_size, c.vocab_size
    hd = getattr(c, 'head_dim', None) or d // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    return {'qkv': (N, d, q + 2 * kv), 'o': (N, q, d), 'gate_up': (N, d, 2 * F), 'down': (N, F, d),
            'head': (N, d, V), 'head_dh': (N, V, d), 'head_dW': (V, N, d)}


def gemm_rates(shapes, device='cpu', reps=3):
    "Measured bf16 GFLOP/s of each [M,K]x[K,N] shape (best of reps)."
    import torch
    out = {}
    for name, (M, K, N) in shapes.items():
        a, b = torch.randn(M, K, device=device).bfloat16(), torch.randn(K, N, device=device).bfloat16()
        best = float('inf')
        for _ in range(reps + 1):
            if device == 'cuda': torch.cuda.synchronize()
            t = time.perf_counter(); a @ b
            if device == 'cuda': torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * M * K * N / best / 1e9
    return out


def worker(a):
    mode, K, device, size, frozen = a.worker.split(','); K, frozen = int(K), frozen == 'yes'
    import torch
    from ens_distill.core import get_config
    from ens_distill.compute import step_flops
    from ens_distill.packed import PackedEnsemble
    from ens_distill.losses import distill_loss
    from ens_distill.train import batch_loss, _targets
    torch.manual_seed(0)
    cfg = member_cfg(size, a.quick)
    V = cfg.vocab_size
    rc = get_config('demo', objective='fkl', alpha=1.)
    N = a.B * a.T
    g = torch.Generator().manual_seed(1)
    data, pool = [], torch.randperm(V, generator=g)[:1024]  # tokens and targets from 1024 ids: the loss can fall in a few steps
    for _ in range(a.steps + 1):  # identical data for every mode: blocks [K,B,T], teacher top-k ids/log-probs/tail
        x = pool[torch.randint(0, len(pool), (K, a.B, a.T), generator=g)]
        ids = torch.stack([pool[torch.randperm(len(pool), generator=g)[:a.topk]] for _ in range(K * N)]).view(K, a.B, a.T, a.topk)
        lp = torch.log_softmax(3 * torch.randn(K, a.B, a.T, a.topk + 1, generator=g), -1)
        data.append([t.to(device) for t in (x, ids, lp[..., :-1].contiguous(), lp[..., -1].contiguous())])
    ens = PackedEnsemble(cfg, K).to(device)  # identical initial weights in every mode
    if frozen:  # one frozen head for all: the packed ensemble holds it once, each HF member a frozen copy
        sd = ens.state_dict(); ens = PackedEnsemble(cfg, K, share_embedding=True).to(device)
        ens.load_state_dict({**sd, 'embed': sd['embed'][:1]})
    if mode.startswith('loop'):
        models = ens.to_members(); del ens
        for m in models:
            m.to(device).train()
            if frozen: m.get_input_embeddings().weight.requires_grad_(False)
        params = [p for m in models for p in m.parameters() if p.requires_grad]
    else:
        if mode.endswith('c'): ens.compile_layers()
        params = [p for p in ens.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.1, fused=True)  # the same update on both sides (training uses make_optimizer)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled='bf16' in mode)

    def step(x, ids, lp, tl):
        with amp:
            if mode.startswith('loop'):  # each HF member on its own: full [B,T,V] logits, the library's loss through autograd
                tot = 0.
                for k, m in enumerate(models):
                    y = _targets(x[k]); n = (y != -100).sum()
                    loss = distill_loss(m(x[k]).logits, y, ids[k], lp[k], tl[k], objective=rc.objective, alpha=rc.alpha)['loss'].sum() / n
                    loss.backward(); tot += loss.item()
            else:
                loss, _ = batch_loss(ens, x, (ids, lp, tl), rc, rc.alpha)
                loss.backward(); tot = loss.item()
        opt.step(); opt.zero_grad(set_to_none=True)
        return tot / K

    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    base = rss_mb(); reset_peak_rss()  # peak over warm-up and timed steps
    losses = [step(*data[0])]  # warm-up (allocates the optimizer state; compiles)
    sync()
    if device == 'cuda': torch.cuda.reset_peak_memory_stats(); base_gpu = torch.cuda.memory_allocated() / 2**20
    times = []
    for d in data[1:]:
        t = time.perf_counter(); losses.append(step(*d)); sync(); times.append(time.perf_counter() - t)
    r = dict(mode=mode, K=K, device=device, size=size, frozen=frozen, B=a.B, T=a.T, s_per_step=min(times),
             tok_s=K * N / min(times), mem_mb=peak_rss_mb() - base, losses=losses, flops=step_flops(cfg, K, N, a.T))
    if device == 'cuda': r['gpu_mem_mb'] = torch.cuda.max_memory_allocated() / 2**20 - base_gpu
    print('RESULT ' + json.dumps(r), flush=True)


def run_worker(a, mode, K, device, size, frozen='no', steps=None):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    if JEMALLOC: env.update(LD_PRELOAD=JEMALLOC[0], MALLOC_CONF='dirty_decay_ms:-1,muzzy_decay_ms:-1')  # same allocator for every mode
    argv = [sys.executable, __file__, '--worker', f'{mode},{K},{device},{size},{frozen}', '--B', str(a.B), '--T', str(a.T),
            '--steps', str(steps or a.steps), '--topk', str(a.topk)] + (['--quick'] if a.quick else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    res = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    if not res: raise RuntimeError(f'worker {mode} K={K} {size} frozen={frozen} failed:\n{out.stderr[-3000:]}')
    return json.loads(res[-1][7:])


def table(rows, peak, mem_key='mem_mb'):
    print(f"{'size':<10}{'head':<8}{'mode':<13}{'K':>3}{'s/step':>8}{'tok/s':>8}{'peak MB':>9}{'GFLOP/s':>9}{'%peak':>7}{'final loss':>11}")
    for r in rows:
        rate = r['flops'] / r['s_per_step'] / 1e9
        print(f"{r['size']:<10}{'frozen' if r['frozen'] else 'own':<8}{r['mode']:<13}{r['K']:>3}{r['s_per_step']:>8.3f}{r['tok_s']:>8.0f}"
              f"{r[mem_key]:>9.0f}{rate:>9.0f}{100 * rate / peak:>6.1f}%{r['losses'][-1]:>11.5f}")


def ratios(rows):
    "loop/packed time and memory at each dtype, per size, head and K."
    by = {(r['size'], r['frozen'], r['mode'], r['K']): r for r in rows}
    out = []
    for (size, fr, mode, K), lp in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3], kv[0][2])):
        if not mode.startswith('loop'): continue
        for pk_mode in ([mode.replace('loop', 'packed')] + ([mode.replace('loop', 'packed') + 'c'] if 'bf16' in mode else [])):
            pk = by.get((size, fr, pk_mode, K))
            if pk is None: continue
            t, m = lp['s_per_step'] / pk['s_per_step'], lp['mem_mb'] / max(pk['mem_mb'], 1)
            out.append(dict(size=size, frozen=fr, K=K, loop=mode, packed=pk_mode, time_ratio=t, mem_ratio=m))
            print(f"{size:<10}{'frozen' if fr else 'own':<7} K={K}: {mode} / {pk_mode}: time {t:.2f}x (goal >= 1.3 at K >= 4), "
                  f"peak memory {m:.2f}x (goal >= 1), |final loss diff| {abs(pk['losses'][-1] - lp['losses'][-1]):.1e}")
    return out


def main(a):
    import torch
    t0 = time.time()
    print(f"packed vs loop: sizes={a.sizes} B={a.B} T={a.T} steps=1+{a.steps} threads={torch.get_num_threads()} "
          f"jemalloc={'yes' if JEMALLOC else 'absent (glibc malloc)'}")
    shapes = gemm_shapes(member_cfg(a.sizes[0], a.quick), a.B * a.T)
    rates = gemm_rates(shapes)
    peak = max(rates.values())
    print('bf16 GEMM rates of the step\'s shapes (GFLOP/s): ' + ', '.join(f"{n} {shapes[n]} {r:.0f}" for n, r in rates.items())
          + f"; peak {peak:.0f}")
    rows = []
    for i, size in enumerate(a.sizes):
        for K in (a.K if i == 0 else a.K2):
            for fr in a.frozen:
                for mode in a.modes:
                    if fr == 'yes' and mode in ('loop', 'packed'): continue  # the frozen head: bf16 only
                    rows.append(run_worker(a, mode, K, 'cpu', size, fr))
    again = gemm_rates(shapes)                      # again after the workers: the best of both is the peak (load at either time lowers one)
    rates = {n: max(r, again[n]) for n, r in rates.items()}
    peak = max(rates.values())
    print('bf16 GEMM rates, best of before and after the steps (GFLOP/s): ' + ', '.join(f"{n} {r:.0f}" for n, r in rates.items())
          + f"; peak {peak:.0f}")
    table(rows, peak)
    rat = ratios(rows)
    s0 = a.sizes[0]
    chk = {m: run_worker(a, m, 1, 'cpu', s0, steps=a.check_steps - 1)['losses'] for m in ['loop', 'packed', 'packed_bf16']}
    rel = abs(chk['packed_bf16'][-1] / chk['packed'][-1] - 1)
    print(f"loss check, {s0}, K=1, {a.check_steps} identical steps: " + ', '.join(f"{m} {l[0]:.4f} -> {l[-1]:.4f}" for m, l in chk.items())
          + f"; bf16 vs fp32 packed final loss {100 * rel:.2f}% (goal < 1%), fp32 packed vs loop {abs(chk['packed'][-1] - chk['loop'][-1]):.1e}")
    out = dict(cpu=rows, gemm_rates=rates, gemm_shapes=shapes, peak=peak, ratios=rat, loss_check=chk, loss_check_rel=rel)
    if torch.cuda.is_available() and not a.no_gpu:
        grates = gemm_rates(gemm_shapes(member_cfg(s0, a.quick), a.B * a.T), 'cuda')
        gpeak = max(grates.values())
        print(f"\nGPU {torch.cuda.get_device_name()}: bf16 GEMM peak over the step's shapes {gpeak:.0f} GFLOP/s")
        grows = [run_worker(a, mode, 8, 'cuda', s0) for mode in ('loop_bf16', 'packed_bf16')]
        table(grows, gpeak, 'gpu_mem_mb'); out.update(gpu=grows, gpu_peak=gpeak, gpu_ratios=ratios(grows))
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1))
    print(f'({time.time() - t0:.0f} s)')


if __name__ == '__main__':
    a = parse()
    worker(a) if a.worker else main(a)
