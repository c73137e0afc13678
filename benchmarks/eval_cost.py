"""The cost of `eval.evaluate` (every member and combination rule, calibration, diversity) against a bare forward.

The bare forward is what scoring cannot avoid: the packed trunk and the head matmul of every member in bf16, the
logits materialised and dropped. `evaluate` adds per-token statistics over the full vocabulary for the K members and
the 'mean' and 'product' rules (NLL, top-1 confidence and correctness, Brier, and the KL to a top-k teacher cache)
and pairwise diversity. Members have the study's shape (`p8f672g2` cut from SmolLM2-135M: hidden 576, vocabulary
49,152); weights are random, only shapes matter for speed. Printed: both times and their ratio (goal <= 1.10).

History (K=4, 32 blocks of 256 tokens, 2 cores with AMX): 10.0x before issue #16. The head matmul ran in fp32
(autocast ended before the head): bf16 brought it to 4.6x; whole-chunk statistics out of cache -> cache-sized slabs
4.6x -> 3.9x; Brier by a fused norm instead of a batched einsum dot product, KL without a logsumexp pass over
already-normalised log-probs, diversity on every K(K-1)/2-th token: all included in the 3.9x.

    python benchmarks/eval_cost.py [--K 4] [--blocks 32]
"""
import argparse, time
import torch
from transformers import LlamaConfig
from ens_distill.packed import PackedEnsemble, head_logits
from ens_distill.eval import evaluate

SHAPE = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2, head_dim=64,
             intermediate_size=672, tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act='silu')  # p8f672g2


def best(f, n=2):
    "Fastest of n timed calls after one warm-up."
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--K', type=int, default=4); p.add_argument('--blocks', type=int, default=32)
    p.add_argument('--T', type=int, default=256); p.add_argument('--batch', type=int, default=16)
    a = p.parse_args()
    torch.manual_seed(0)
    ens = PackedEnsemble(LlamaConfig(**SHAPE), a.K).eval()
    toks = torch.randint(0, SHAPE['vocab_size'], (a.blocks, a.T))

    def bare():
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
            for s in range(0, len(toks), a.batch): head_logits(ens.hidden(toks[s:s + a.batch]), ens.embed)

    def ev(): evaluate(ens, toks, rules=('mean', 'product') if a.K > 1 else (), amp=torch.bfloat16, batch_size=a.batch)
    tb, te = best(bare), best(ev)
    print(f"K={a.K}, {a.blocks} blocks x {a.T} tokens, threads {torch.get_num_threads()}: bare bf16 forward {tb:.2f} s, "
          f"evaluate {te:.2f} s; evaluate / forward {te / tb:.2f}x (goal <= 1.10)")


if __name__ == '__main__': main()
