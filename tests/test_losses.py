"Dense-math tests of ens_distill.losses against brute-force float64 computations on small tensors."
import math
import pytest
import torch
from ens_distill.core import EnsDistillError
from ens_distill.losses import *

OBJS = ['fkl', 'rkl', 'jsd', 'skl']

def cache_of(t_full, k, tau=1.):
    "A top-k cache (ids, logp, tail at tau) from full teacher log-probs [..., V], as `TopKCache.get(idx, tau)` returns it."
    o = t_full.argsort(-1, descending=True)
    return o[..., :k], t_full.gather(-1, o[..., :k]), (t_full / tau).gather(-1, o[..., k:]).logsumexp(-1)

def brute_buckets(full_lp, ids):
    "Bucket a full-vocab distribution with python loops, float64: [p[ids]..., 1 - sum]."
    p = [math.exp(x) for x in full_lp.tolist()]
    top = [p[i] for i in ids.tolist()]
    rest = sum(p[j] for j in range(len(p)) if j not in set(ids.tolist()))
    return top + [rest]

def brute_teacher(t_lp_full, ids, tau):
    "Teacher buckets at tau by tempering the full teacher explicitly (the exact tempered tail)."
    return brute_buckets((t_lp_full.double() / tau).log_softmax(-1), ids)

def kl(p, q): return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)

def brute_obj(p, q, obj, beta=.5, skew=.1):
    if obj == 'fkl': return kl(p, q)
    if obj == 'rkl': return kl(q, p)
    if obj == 'skl': return kl(p, [skew * a + (1 - skew) * b for a, b in zip(p, q)])
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
    return (beta * kl(p, m) + (1 - beta) * kl(q, m)) / (beta * (1 - beta))

@pytest.fixture(autouse=True)
def _seed(): torch.manual_seed(0)

@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    V, k = 11, 4
    t_full = (2 * torch.randn(3, V, generator=g)).log_softmax(-1)
    logits = torch.randn(3, V, generator=g)
    return V, k, t_full, logits

@pytest.mark.parametrize('tau', [1., .5, 2.5])
def test_buckets_vs_brute(setup, tau):
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k)
    sb, tb = student_buckets(logits, ids, tau), teacher_buckets(lp, tempered_tail(t_full, ids, tau) if tau != 1 else tail, tau)
    for n in range(3):
        want_s = brute_buckets((logits[n].double() / tau).log_softmax(-1), ids[n])
        assert torch.allclose(sb[n].exp().double(), torch.tensor(want_s, dtype=torch.float64), atol=1e-6)
        want_t = brute_teacher(t_full[n], ids[n], tau)
        assert torch.allclose(tb[n].exp().double(), torch.tensor(want_t, dtype=torch.float64), atol=1e-6)

@pytest.mark.parametrize('obj', OBJS)
@pytest.mark.parametrize('tau', [1., 2.])
def test_objectives_vs_brute(setup, obj, tau):
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k, tau)
    y = torch.zeros(3, dtype=torch.long)
    d = distill_loss(logits, y, ids, lp, tail, objective=obj, tau=tau, beta=.3, skew=.2)
    for n in range(3):
        p = brute_teacher(t_full[n], ids[n], tau)
        q = brute_buckets((logits[n].double() / tau).log_softmax(-1), ids[n])
        assert d['kd'][n].item() == pytest.approx(tau**2 * brute_obj(p, q, obj, .3, .2), rel=1e-4, abs=1e-6)

@pytest.mark.parametrize('tau', [1., 3.])
def test_full_vocab_when_k_is_v_minus_1(setup, tau):
    "With k = V-1 the bucketed forward KL is the full-vocabulary KL of the tempered distributions."
    V, k, t_full, logits = setup
    d = distill_loss(logits, torch.zeros(3, dtype=torch.long), *cache_of(t_full, V - 1, tau), tau=tau)
    pt, ps = (t_full.double() / tau).log_softmax(-1), (logits.double() / tau).log_softmax(-1)
    full = (pt.exp() * (pt - ps)).sum(-1) * tau**2
    assert torch.allclose(d['kd'].double(), full, atol=1e-5)

def test_fkl_gradient_closed_form(setup):
    "d fkl / d z = q - target, target = p on top-k ids and p_tail * q_i / q_tail on tail ids."
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k)
    z = logits.clone().requires_grad_()
    forward_kl(teacher_buckets(lp, tail), student_buckets(z, ids)).sum().backward()
    q = logits.softmax(-1)
    tgt = q.clone()
    mask = torch.zeros_like(q, dtype=torch.bool).scatter(-1, ids, True)
    q_tail = (q * ~mask).sum(-1, keepdim=True)
    tgt = torch.where(mask, 0., q * tail.exp()[:, None] / q_tail).scatter(-1, ids, lp.exp())
    assert torch.allclose(z.grad, q - tgt, atol=1e-6)
    # pushes toward the teacher: ids the teacher likes more than the student get a negative gradient
    under = lp.exp() > q.gather(-1, ids)
    assert (z.grad.gather(-1, ids)[under] < 0).all() and (z.grad.gather(-1, ids)[~under] > 0).all()

@pytest.mark.parametrize('obj', OBJS)
def test_zero_loss_and_grad_when_equal(setup, obj):
    V, k, t_full, logits = setup
    ids = cache_of(logits.log_softmax(-1), k)[0]
    sb = student_buckets(logits, ids).detach()
    z = logits.clone().requires_grad_()
    d = distill_loss(z, torch.zeros(3, dtype=torch.long), ids, sb[:, :k], sb[:, k], objective=obj)
    d['loss'].sum().backward()
    assert d['kd'].abs().max() < 1e-6 and z.grad.abs().max() < 1e-6

@pytest.mark.parametrize('obj', OBJS)
def test_gradient_step_moves_toward_teacher(setup, obj):
    V, k, t_full, logits = setup
    c = cache_of(t_full, k); y = torch.zeros(3, dtype=torch.long)
    z = logits.clone().requires_grad_()
    l0 = distill_loss(z, y, *c, objective=obj)['loss'].sum(); l0.backward()
    l1 = distill_loss(z.detach() - .05 * z.grad, y, *c, objective=obj)['loss'].sum()
    assert l1 < l0

def test_jsd_endpoints_and_continuity():
    t, s = torch.randn(6, 5).log_softmax(-1), torch.randn(6, 5).log_softmax(-1)
    assert torch.equal(jsd(t, s, 0.), forward_kl(t, s)) and torch.equal(jsd(t, s, 1.), reverse_kl(t, s))
    def ref(b):  # float64 naive formula: accurate enough for b >= 1e-7
        lp, lq = t.double(), s.double(); p, q = lp.exp(), lq.exp(); lm = (b * p + (1 - b) * q).log()
        return (b * (p * (lp - lm)).sum(-1) + (1 - b) * (q * (lq - lm)).sum(-1)) / (b * (1 - b))
    for b in (1e-7, 1e-5, 1e-3, .2, .5, 1 - 1e-3, 1 - 1e-5, 1 - 1e-7):  # accurate in fp32 next to the ends
        assert torch.allclose(jsd(t, s, b).double(), ref(b), atol=5e-6, rtol=0)
    gap0 = [(jsd(t, s, b) - forward_kl(t, s)).abs().max().item() for b in (1e-3, 1e-5, 1e-7)]
    gap1 = [(jsd(t, s, 1 - b) - reverse_kl(t, s)).abs().max().item() for b in (1e-3, 1e-5, 1e-7)]
    for g in (gap0, gap1): assert g[0] > g[1] > 0 and g[2] < 5e-6  # continuous at both ends
    vals = torch.stack([jsd(t, s, b) for b in torch.linspace(0, 1, 21).tolist()])
    assert (vals.diff(dim=0).abs() < .5).all() and (vals >= -1e-6).all()
    with pytest.raises(EnsDistillError): jsd(t, s, 1.5)

def test_skew_limits():
    t, s = torch.randn(6, 5).log_softmax(-1), torch.randn(6, 5).log_softmax(-1)
    assert torch.equal(skew_kl(t, s, 0.), forward_kl(t, s))
    assert skew_kl(t, s, 1.).abs().max() < 1e-7
    assert torch.allclose(skew_kl(t, s, 1e-6), forward_kl(t, s), atol=1e-4)
    vals = [skew_kl(t, s, a).sum().item() for a in (0., .1, .5, .9, 1.)]
    assert all(a >= b - 1e-6 for a, b in zip(vals, vals[1:]))  # more skew, smaller loss

def test_alpha_and_ce():
    g = torch.Generator().manual_seed(1)
    V = 13; logits = torch.randn(2, 5, V, generator=g); y = torch.randint(0, V, (2, 5), generator=g); y[1, -1] = -100
    c = cache_of(torch.randn(2, 5, V, generator=g).log_softmax(-1), 4)
    full_ce = -logits.log_softmax(-1).gather(-1, y.clamp_min(0)[..., None])[..., 0]
    assert torch.allclose(ce(logits, y)[0], full_ce[0]) and ce(logits, y)[1, -1] == 0
    d0, d1, dh = (distill_loss(logits, y, *c, objective='jsd', alpha=a) for a in (0., 1., .25))
    assert torch.equal(d0['loss'], ce(logits, y)) and torch.equal(d1['loss'], d1['kd'])
    assert torch.allclose(dh['loss'], .25 * dh['kd'] + .75 * dh['ce'])
    assert d1['kd'][1, -1] == 0 and d1['loss'][1, -1] == 0  # masked position
    assert torch.equal(distill_loss(logits, y, objective='ce')['loss'], ce(logits, y))
    # no gradient flows through the zero-weight term
    z = logits.clone().requires_grad_()
    assert not distill_loss(z, y, *c, alpha=1.)['ce'].requires_grad
    assert not distill_loss(z, y, *c, alpha=0.)['kd'].requires_grad
    pe = per_example(dh['loss'], y != -100)
    assert torch.allclose(pe[1], dh['loss'][1, :-1].mean())

def test_tau_scaling(setup):
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k); y = torch.zeros(3, dtype=torch.long)
    for tau in (.5, 2., 4.):
        tt = tempered_tail(t_full, ids, tau)
        want = tau**2 * forward_kl(teacher_buckets(lp, tt, tau), student_buckets(logits, ids, tau))
        assert torch.allclose(distill_loss(logits, y, ids, lp, tt, tau=tau)['kd'], want)

def test_tempered_tail_is_exact_and_smaller_than_uniform(setup):
    "At tau > 1 the exact tempered tail mass is below the uniform-spread one the old code assumed."
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k)
    tb = teacher_buckets(lp, tempered_tail(t_full, ids, 2.), 2.)
    exact = (t_full / 2).log_softmax(-1).scatter(-1, ids, float('-inf')).logsumexp(-1)
    assert torch.allclose(tb[..., -1], exact, atol=1e-6)
    ln = math.log(V - k); uni = torch.cat([lp / 2, (ln + (tail - ln) / 2)[..., None]], -1).log_softmax(-1)[..., -1]
    assert (exact <= uni + 1e-6).all() and (exact < uni - 1e-3).any()

def test_alpha_at():
    assert alpha_at(3, 10, .4) == .4
    assert [alpha_at(s, 5, .4, 'ramp_kd_ce') for s in range(5)] == [1., .75, .5, .25, 0.]
    assert [alpha_at(s, 5, .4, 'ramp_ce_kd') for s in range(5)] == [0., .25, .5, .75, 1.]
    cos = [alpha_at(s, 5, .4, 'cosine') for s in range(5)]
    assert cos[0] == 1. and abs(cos[-1]) < 1e-12 and abs(cos[2] - .5) < 1e-12 and cos == sorted(cos, reverse=True)
    assert alpha_at(0, 1, .4, 'ramp_kd_ce') == 1. and alpha_at(99, 10, .4, 'cosine') == 0.
    with pytest.raises(EnsDistillError, match='alpha_schedule'): alpha_at(0, 10, 1., 'step')

def test_mixture_kl_is_the_jensen_gap_form():
    "Value: KL(t || mean q); gradient: that of K x it; own KLs minus it is the diversity (>= 0, 0 for equal members)."
    g = torch.Generator().manual_seed(2)
    K, k1 = 4, 6
    t = torch.randn(3, k1, generator=g).log_softmax(-1)
    mq = torch.randn(K, 3, k1, generator=g).log_softmax(-1)
    mix = mq.exp().mean(0).log()
    assert torch.allclose(mixture_kl(t, mq), forward_kl(t, mix).expand(K, 3), atol=1e-6)
    x = mq.clone().requires_grad_(); mixture_kl(t, x).sum().backward()
    y = mq.clone().requires_grad_(); (K * forward_kl(t, y.exp().mean(0).log())).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-5)
    gap = forward_kl(t, mq).mean(0) - forward_kl(t, mix)
    assert (gap >= -1e-6).all() and gap.max() > 1e-3
    same = mq[:1].expand(K, 3, k1)
    assert torch.allclose(forward_kl(t, same).mean(0), mixture_kl(t, same)[0], atol=1e-6)

def test_ensemble_kl(setup):
    V, k, t_full, logits = setup
    ids, lp, tail = cache_of(t_full, k)
    mem = torch.stack([student_buckets(logits + torch.randn(V), ids) for _ in range(3)])
    tb = teacher_buckets(lp, tail)
    assert torch.allclose(ensemble_kl(lp, tail, mem[:1]), forward_kl(tb, mem[0]))
    for n in range(3):
        mix = [sum(mem[m, n, b].exp().item() for m in range(3)) / 3 for b in range(k + 1)]
        assert ensemble_kl(lp, tail, mem)[n].item() == pytest.approx(kl(tb[n].exp().tolist(), mix), rel=1e-4)
    with pytest.raises(EnsDistillError, match='ensemble_kl'): ensemble_kl(lp, tail, mem[..., :-1])

@pytest.mark.parametrize('obj', OBJS)
def test_extreme_logits_finite(obj):
    g = torch.Generator().manual_seed(3)
    V, k = 9, 3
    t_full = (5 * torch.randn(4, V, generator=g)).log_softmax(-1); ids, lp, tail = cache_of(t_full, k)
    # the student puts all its mass outside the teacher's top-k, at +-1e4
    z = torch.full((4, V), 1e4).scatter(-1, ids, -1e4).requires_grad_()
    for tau in (1., 2.):
        d = distill_loss(z, torch.zeros(4, dtype=torch.long), ids, lp, tail, objective=obj, alpha=.5, tau=tau)
        d['loss'].sum().backward()
        assert torch.isfinite(d['loss']).all() and torch.isfinite(z.grad).all()
    # k = V: the tail bucket is empty on both sides
    ids, lp, tail = cache_of(t_full, V)
    assert torch.isinf(tail).all() and torch.isfinite(distill_loss(z, torch.zeros(4, dtype=torch.long), ids, lp, tail, objective=obj, tau=2.)['loss']).all()

def test_bf16_autocast_inputs():
    g = torch.Generator().manual_seed(4)
    V, k = 17, 5
    lin = torch.nn.Linear(8, V); x = torch.randn(2, 3, 8, generator=g); y = torch.randint(0, V, (2, 3), generator=g)
    c = cache_of(torch.randn(2, 3, V, generator=g).log_softmax(-1), k)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = lin(x)
        assert logits.dtype == torch.bfloat16
        d = distill_loss(logits, y, *c, objective='jsd', alpha=.5, tau=2.)
    assert d['loss'].dtype == torch.float32 and torch.isfinite(d['loss']).all()
    ref = distill_loss(logits.float(), y, *c, objective='jsd', alpha=.5, tau=2.)
    assert torch.allclose(d['loss'], ref['loss'], atol=1e-5)
    d['loss'].sum().backward()
    assert torch.isfinite(lin.weight.grad).all()

def test_packed_broadcast_and_shape_errors():
    V, k = 7, 3
    c = cache_of(torch.randn(2, 4, V).log_softmax(-1), k); y = torch.randint(0, V, (2, 4))
    logits = torch.randn(3, 2, 4, V)
    d = distill_loss(logits, y, *c)
    assert d['loss'].shape == (3, 2, 4)
    assert torch.allclose(d['kd'][1], distill_loss(logits[1], y, *c)['kd'])
    for bad in (lambda: distill_loss(logits, y[:, :3], *c),
                lambda: distill_loss(torch.randn(2, 5, V), y, *c),
                lambda: teacher_buckets(c[1], c[2][:, :2]),
                lambda: student_buckets(torch.randn(2, 4, 2), c[0])):
        with pytest.raises(EnsDistillError) as e: bad()
        assert '\n' not in str(e.value)
    with pytest.raises(EnsDistillError, match='needs the teacher cache'): distill_loss(logits, y, objective='fkl')

def test_check_finite():
    assert check_finite(torch.tensor(2.), 1) == 2.
    for v in (float('nan'), float('inf'), torch.tensor([0., float('-inf')])):
        with pytest.raises(EnsDistillError, match='non-finite loss at step 12: lower lr / check data; last good checkpoint kept'):
            check_finite(v, 12)

@pytest.mark.parametrize('obj', OBJS)
def test_teacher_minus_inf_is_bounded(obj):
    "A cache entry of -inf (teacher masks logits) keeps every objective finite and moderate."
    V, k = 8, 3
    ids = torch.tensor([[0, 1, 2]]); lp = torch.tensor([[-.1, -2.5, float('-inf')]]); tail = torch.tensor([float('-inf')])
    z = torch.zeros(1, V, requires_grad=True)
    d = distill_loss(z, torch.zeros(1, dtype=torch.long), ids, lp, tail, objective=obj, tau=2.)
    d['loss'].sum().backward()
    assert torch.isfinite(d['loss']).all() and d['loss'].item() < 1e3 and torch.isfinite(z.grad).all()
