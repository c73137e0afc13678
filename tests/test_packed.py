"Packed ensemble: exact equivalence with HF Llama members, chunked head loss, combine rules (nbs/30_packed.ipynb)."
import math, pytest, torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from ens_distill.core import EnsDistillError
from ens_distill.packed import *

V = 300


def members(K=3, seed=0, **ov):
    torch.manual_seed(seed)
    return [LlamaForCausalLM(student_config('tiny', V, **ov)).eval() for _ in range(K)]


def hf_logits(ms, x):  # x [B,T] or [K,B,T]
    xs = x if x.dim() == 3 else [x] * len(ms)
    return torch.stack([m(xi).logits for m, xi in zip(ms, xs)])


@pytest.mark.parametrize('ov', [dict(), dict(num_key_value_heads=4), dict(num_key_value_heads=1, head_dim=16),
                                dict(rope_theta=500.0, pad_token_id=0)])
@pytest.mark.parametrize('per_member', [False, True])
@torch.no_grad()
def test_logits_equal_hf(ov, per_member):
    ms = members(**ov)
    ens = PackedEnsemble.from_members(ms)
    x = torch.randint(0, V, (3, 2, 24) if per_member else (2, 24))
    out = ens(x)
    assert out.shape == (3, 2, 24, V)
    torch.testing.assert_close(out, hf_logits(ms, x), atol=1e-5, rtol=0)


def test_round_trip():
    ms = members(num_key_value_heads=1)
    ens = PackedEnsemble.from_members(ms)
    back = ens.to_members()
    for a, b in zip(ms, back):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa: assert torch.equal(sa[k], sb[k]), k
        assert b.lm_head.weight.data_ptr() == b.model.embed_tokens.weight.data_ptr()  # still tied
    ens2 = PackedEnsemble.from_members(back)
    for (n, p), (_, q) in zip(ens.named_parameters(), ens2.named_parameters()): assert torch.equal(p, q), n


def test_save_load_members(tmp_path):
    ms = members(K=2)
    ens = PackedEnsemble.from_members(ms)
    ens.save_members(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['member_0', 'member_1']
    assert (tmp_path/'member_1'/'model.safetensors').exists()
    x = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        for i, m in enumerate(ms):
            hf = AutoModelForCausalLM.from_pretrained(tmp_path/f'member_{i}')
            assert type(hf).__name__ == 'LlamaForCausalLM'
            torch.testing.assert_close(hf(x).logits, m(x).logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(load_members(tmp_path)(x), ens(x), atol=1e-6, rtol=0)


def test_bad_inputs_one_line(tmp_path):
    ens = PackedEnsemble.from_members(members(K=2))
    cases = [(lambda: ens(torch.zeros(3, 2, 4, dtype=torch.long)), 'K=2'),
             (lambda: student_config('huge', V), 'huge'),
             (lambda: load_members(tmp_path), 'member_'),
             (lambda: PackedEnsemble.from_members(members(K=1) + members(K=1, num_key_value_heads=4)), 'num_key_value_heads'),
             (lambda: PackedEnsemble(student_config('tiny', V, attention_bias=True), 2), 'attention_bias'),
             (lambda: combine(torch.zeros(2, 3, 4), 'vote'), 'vote'),
             (lambda: init_from_teacher(ens, torch.randn(V + 1, 8)), 'vocab')]
    for f, msg in cases:
        with pytest.raises(EnsDistillError) as e: f()
        assert msg in str(e.value) and '\n' not in str(e.value)


def ce_fn(tg):  # tg [K,N]
    return lambda lg, sl: F.cross_entropy(lg.flatten(0, 1), tg[:, sl].flatten(), reduction='sum')


def kd_fn(ids, tlogp):  # random top-k target: ids [K,N,k], tlogp [K,N,k]
    return lambda lg, sl: -(tlogp[:, sl].exp() * lg.log_softmax(-1).gather(-1, ids[:, sl])).sum()


def _grads(ens, loss_fn):
    ens.zero_grad()
    loss = loss_fn(ens)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in ens.named_parameters()}


@pytest.mark.parametrize('kind', ['ce', 'kd'])
@pytest.mark.parametrize('chunk', [5, 7, 1000, None])
def test_head_loss_matches_naive(kind, chunk):
    ens = PackedEnsemble.from_members(members())
    x = torch.randint(0, V, (3, 2, 17))
    K, N = 3, 2*16
    if kind == 'ce': fn = ce_fn(x[..., 1:].reshape(K, N))
    else:
        ids = torch.randint(0, V, (K, N, 5)); fn = kd_fn(ids, torch.randn(K, N, 5).log_softmax(-1) - 1.0)
    naive = lambda e: fn(e(x[..., :-1]).reshape(K, N, V), slice(0, N))
    chunked = lambda e: e.head_loss(e.hidden(x[..., :-1]), fn, chunk)
    l0, g0 = _grads(ens, naive)
    l1, g1 = _grads(ens, chunked)
    torch.testing.assert_close(l1, l0, atol=1e-4, rtol=1e-6)
    for n in g0: torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)
    with torch.no_grad(): torch.testing.assert_close(chunked(ens), l0, atol=1e-4, rtol=1e-6)  # eval path
    with torch.no_grad():  # the module-level function on flattened tokens [K,N,d]
        torch.testing.assert_close(head_loss(ens.hidden(x[..., :-1]).reshape(K, N, -1), ens.head_weight, fn, chunk), l0, atol=1e-4, rtol=1e-6)
    ens.zero_grad(); (2 * chunked(ens)).backward()  # grad_output scales the stored gradients
    torch.testing.assert_close(ens.layers[0].wqkv.grad, 2 * g1['layers.0.wqkv'], atol=1e-5, rtol=1e-4)


def test_head_loss_bf16_autocast():
    ens = PackedEnsemble.from_members(members(K=2))
    x = torch.randint(0, V, (2, 4, 33))
    fn = ce_fn(x[..., 1:].reshape(2, -1))
    l0, g0 = _grads(ens, lambda e: e.head_loss(e.hidden(x[..., :-1]), fn, 16))
    seen = []
    def fn16(lg, sl): seen.append(lg.dtype); return fn(lg, sl)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        l1, g1 = _grads(ens, lambda e: e.head_loss(e.hidden(x[..., :-1]), fn16, 16))
    assert set(seen) == {torch.float32} and all(g.dtype == torch.float32 for g in g1.values())
    assert abs(l1 - l0) / l0 < 1e-2
    for n in g0: assert F.cosine_similarity(g1[n].flatten(), g0[n].flatten(), 0) > 0.99, n


def test_train_step_grads_equal_hf():
    "One packed CE step gives each member exactly the gradients its own HF training step gives."
    ms = members(num_key_value_heads=1, pad_token_id=0)
    ens = PackedEnsemble.from_members(ms)
    x = torch.randint(0, V, (3, 2, 21)); x[:, :, 5] = 0  # some padding-id inputs
    for m, xi in zip(ms, x):
        m.zero_grad(); F.cross_entropy(m(xi[:, :-1]).logits.flatten(0, 1), xi[:, 1:].flatten(), reduction='sum').backward()
    loss = ens.head_loss(ens.hidden(x[..., :-1]), ce_fn(x[..., 1:].reshape(3, -1)), 9)
    loss.backward()
    for k, m in enumerate(ms):
        hf = {n: p.grad for n, p in m.named_parameters()}
        hf['lm_head.weight'] = hf['model.embed_tokens.weight']
        grads_as_members = PackedEnsemble.from_members(ms)  # same structure, fill with packed grads
        with torch.no_grad():
            for p, q in zip(grads_as_members.parameters(), ens.parameters()): p.copy_(q.grad)
        mine = grads_as_members.member_state_dict(k)
        for n, g in hf.items(): torch.testing.assert_close(mine[n], g, atol=1e-5, rtol=1e-4, msg=n)


@torch.no_grad()
def test_logprobs_at():
    ens = PackedEnsemble.from_members(members())
    x = torch.randint(0, V, (2, 12))
    ref = ens(x).log_softmax(-1).gather(-1, x.expand(3, 2, 12)[..., None])[..., 0]
    torch.testing.assert_close(ens.logprobs_at(ens.hidden(x), x, chunk_tokens=5), ref, atol=1e-5, rtol=0)


def test_combine_rules():
    torch.manual_seed(0)
    K, B, T, Vs = 4, 3, 5, 11
    lp = (3 * torch.randn(K, B, T, Vs, dtype=torch.float64)).log_softmax(-1)
    w = torch.rand(K, B, dtype=torch.float64)
    for rule, kw in [('mean', {}), ('product', {}), ('weighted', dict(weights=w))]:
        torch.testing.assert_close(combine(lp, rule, **kw).exp().sum(-1), torch.ones(B, T, dtype=torch.float64))
    p = lp.exp()
    for b in range(B):
        for t in range(T):
            mix = sum(p[k, b, t] for k in range(K)) / K
            poe = torch.ones(Vs, dtype=torch.float64)
            for k in range(K): poe = poe * p[k, b, t] ** (1 / K)
            wmix = sum(w[k, b] * p[k, b, t] for k in range(K)) / w[:, b].sum()
            torch.testing.assert_close(combine(lp, 'mean')[b, t].exp(), mix)
            torch.testing.assert_close(combine(lp, 'product')[b, t].exp(), poe / poe.sum())
            torch.testing.assert_close(combine(lp, 'weighted', w)[b, t].exp(), wmix)
    one_hot = torch.zeros(K, B); one_hot[2] = 1
    torch.testing.assert_close(combine(lp.float(), 'weighted', one_hot), lp[2].float())
    torch.testing.assert_close(combine(lp, 'weighted', torch.ones(K)), combine(lp, 'mean'))


def test_init_from_teacher():
    ens = PackedEnsemble(student_config('tiny', V), 3)
    E = torch.randn(V, 48) @ torch.randn(48, 48)
    init_from_teacher(ens, E, seed=0)
    assert abs(ens.embed.std().item() - 0.02) < 1e-3
    G = [e @ e.T for e in ens.embed]  # Gram matrices equal: same geometry, rotated per member
    torch.testing.assert_close(G[0], G[2], atol=1e-5, rtol=1e-3)
    assert not torch.allclose(ens.embed[0], ens.embed[1])
    # the projection keeps the top principal directions: it explains more variance than a random one
    P = pca_project(E, 32)
    Ec = E - E.mean(0)
    R = Ec @ torch.linalg.qr(torch.randn(48, 32))[0]
    assert P.pow(2).sum() > R.pow(2).sum()
    small = PackedEnsemble(student_config('tiny', V, hidden_size=64, num_attention_heads=4, num_key_value_heads=2), 2)
    init_from_teacher(small, torch.randn(V, 16), seed=0)  # student wider than the teacher
    assert torch.isfinite(small.embed).all() and abs(small.embed.std().item() - 0.02) < 1e-3


def test_student_sizes():
    for s in STUDENT_SIZES:
        c = student_config(s, 49152)
        assert c.tie_word_embeddings and c.hidden_size % c.num_attention_heads == 0
    with torch.device('meta'): n = sum(p.numel() for p in LlamaForCausalLM(student_config('xs', 49152)).parameters())
    assert 6.5e6 < n < 6.9e6
