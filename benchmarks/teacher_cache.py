"""Benchmark the teacher top-k cache pass against a bare teacher forward on the real teacher.

Loads the default teacher (SmolLM2-135M-Instruct, converted once from the embedded GGUF), runs a few blocks
through (a) a bare forward with the same autocast dtype and the same batches and (b) the full cache pass
(forward + fp32 top-k + tail + encode + sha256 + shard write + reopen), and prints bytes/token of the
'u8' and 'fp16' formats and the overhead ratio cache_time / forward_time (goal <= 1.10).
Timings are the minimum over interleaved repeats; a third estimate times the forward and the top-k step
batch by batch in one loop (steadier when other processes share the CPU). It also prints the cache pass's FLOP rate
(`compute.step_flops` / 3: the teacher forward, head and attention included) as a share of the best bf16 GEMM rate
of the teacher's own matmul shapes, measured in the same run (goal >= 60%).
Usage: python benchmarks/teacher_cache.py [--blocks 8 ...]
"""
import os
for v in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'): os.environ.setdefault(v, '1')
import argparse, sys, tempfile, time
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packed_vs_loop import gemm_shapes, gemm_rates  # the GEMM-shape peak, measured the same way for students and teacher
from ens_distill.compute import step_flops
from ens_distill.core import autocast_dtype, default_data_dir
from ens_distill.teacher import TopKCache, load_teacher, teacher_vocab, topk_logprobs, _encode_shard

def bare_forward(model, toks, batch_size, amp):
    "The teacher forward alone, batch by batch (logits materialised, nothing kept)."
    for x in toks.split(batch_size):
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            model(input_ids=x, use_cache=False).logits

def split_pass(model, toks, batch_size, amp, k):
    "CPU seconds of the forward and of the top-k + tail + encode step, timed batch by batch in one loop."
    fwd = post = 0.
    for x in toks.split(batch_size):
        with torch.inference_mode():
            c = time.process_time()
            with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                lg = model(input_ids=x, use_cache=False).logits
            fwd += time.process_time() - c; c = time.process_time()
            _encode_shard(*topk_logprobs(lg, k), 'u8', lg.shape[-1])
            post += time.process_time() - c
    return fwd, post

def timed(f):
    "(wall seconds, process CPU seconds) of f(); CPU time is the steadier of the two on a shared machine."
    w, c = time.perf_counter(), time.process_time(); f(); return time.perf_counter() - w, time.process_time() - c

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--teacher', default='smollm2-135m-instruct'); p.add_argument('--blocks', type=int, default=8)
    p.add_argument('--block_size', type=int, default=128); p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--k', type=int, default=32); p.add_argument('--teacher_dtype', default='auto')
    p.add_argument('--repeats', type=int, default=2); p.add_argument('--device', default='cpu')
    p.add_argument('--text', default=f'{default_data_dir()}/stories_fairy_tales/grimms_fairy_stories.txt',
                   help='text file to tokenize (random token ids when it does not exist)')
    a = p.parse_args()
    t = time.perf_counter(); model, tok = load_teacher(a.teacher); load_s = time.perf_counter() - t
    dev = torch.device(a.device); model.to(dev)
    amp = autocast_dtype(a.teacher_dtype, dev)
    n_tok = a.blocks * a.block_size
    ids = tok.encode(open(a.text).read(200 * n_tok), add_special_tokens=False)[:n_tok] if os.path.exists(a.text) else []
    src = a.text if len(ids) == n_tok else 'random token ids'
    toks = (torch.tensor(ids) if len(ids) == n_tok else torch.randint(0, len(tok), (n_tok,), generator=torch.Generator().manual_seed(0)))
    toks = toks.reshape(a.blocks, a.block_size).to(dev)
    print(f"teacher {a.teacher}: {sum(p.numel() for p in model.parameters())/1e6:.1f}M params, V={teacher_vocab(model)}, "
          f"loaded in {load_s:.1f} s; forward dtype {'bf16' if amp else 'fp32'} on {dev}; "
          f"{a.blocks} blocks x {a.block_size} tokens of {src}, batch {a.batch_size}, k={a.k}; torch threads {torch.get_num_threads()}")
    bare_forward(model, toks[:a.batch_size], a.batch_size, amp)  # warm-up
    fwd, cache, bpt = [], [], {}
    with tempfile.TemporaryDirectory() as d:
        def build(dtype, out): return TopKCache.build(model, toks, out, k=a.k, dtype=dtype, batch_size=a.batch_size,
                                                      teacher_dtype=a.teacher_dtype, progress=False)
        for r in range(a.repeats):  # interleaved so that load from other processes hits both alike
            fwd.append(timed(lambda: bare_forward(model, toks, a.batch_size, amp)))
            cache.append(timed(lambda: build('u8', f'{d}/u8-{r}')))
            bpt['u8'] = TopKCache(f'{d}/u8-{r}').bytes_per_token
        c16 = timed(lambda: build('fp16', f'{d}/fp16'))
        bpt['fp16'] = TopKCache(f'{d}/fp16').bytes_per_token
    for j, what in enumerate(('wall', 'cpu')):
        f, c = min(x[j] for x in fwd), min(x[j] for x in cache)
        print(f"[{what}] bare forward {f:.2f} s ({n_tok/f:.0f} tok/s), cache pass u8 {c:.2f} s, fp16 {c16[j]:.2f} s; "
              f"overhead ratio cache/forward: u8 {c/f:.3f}, fp16 {c16[j]/f:.3f} (goal <= 1.10)   "
              f"runs fwd {[round(x[j], 2) for x in fwd]} cache {[round(x[j], 2) for x in cache]}")
    f, p = split_pass(model, toks, a.batch_size, amp, a.k)
    print(f"[split, cpu] forward {f:.2f} s + top-k/tail/encode {p:.2f} s in the same loop: overhead ratio {(f + p)/f:.3f} "
          "(steadier under load; excludes the shard write and checksum, ~ms)")
    print(f"bytes/token at k={a.k}: u8 {bpt['u8']:.1f}, fp16 {bpt['fp16']:.1f}")
    if amp is not None and dev.type == 'cpu':
        shapes = gemm_shapes(model.config, a.batch_size * a.block_size)
        shapes = {n: s for n, s in shapes.items() if n not in ('head_dh', 'head_dW')}  # a forward has no gradient matmuls
        rates = gemm_rates(shapes); peak = max(rates.values())
        fl = step_flops(model.config, 1, n_tok, a.block_size) / 3             # forward FLOPs of the blocks (head, attention)
        c = min(x[0] for x in cache); f = min(x[0] for x in fwd)
        print(f"teacher bf16 GEMM rates (GFLOP/s): " + ', '.join(f"{n} {r:.0f}" for n, r in rates.items()) + f"; peak {peak:.0f}")
        print(f"cache pass {fl / c / 1e9:.0f} GFLOP/s = {100 * fl / c / 1e9 / peak:.0f}% of peak (goal >= 60%); "
              f"bare forward {fl / f / 1e9:.0f} GFLOP/s = {100 * fl / f / 1e9 / peak:.0f}%")

if __name__ == '__main__': main()
