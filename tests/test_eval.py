"Token-level evaluation (nbs/60_eval.ipynb): metrics against brute force on tiny random models."
import math
import pytest, torch
import torch.nn.functional as F
from ens_distill.core import EnsDistillError
from ens_distill.eval import *
from ens_distill.packed import PackedEnsemble, student_config, combine
from ens_distill.teacher import tiny_teacher, TopKCache


@pytest.fixture(scope='module')
def setup():
    teacher, tok = tiny_teacher()
    torch.manual_seed(0)
    ens = PackedEnsemble(student_config('tiny', len(tok), initializer_range=.2), K=3).eval()
    text = "Once upon a time there was a little fox. def add(a, b):\n    return a + b\nHi! Do you like football? " * 4
    ids = tok.encode(text)[:5 * 20]
    toks = torch.tensor(ids).view(5, 20)
    doms = ['stories', 'stories', 'code', 'code', 'dialog']
    return teacher, tok, ens, toks, doms


def brute(models, toks):
    "Per-member full logits [K,N,T-1,V] from plain HF forwards."
    with torch.no_grad(): return torch.stack([m(toks).logits[:, :-1].float() for m in models])


def test_ce_ppl_match_hf_forward(setup):
    teacher, tok, ens, toks, doms = setup
    res = evaluate(ens, toks, doms, batch_size=2, chunk=16)
    logits = brute(ens.to_members(), toks)                                  # [K,N,T-1,V]
    y = toks[:, 1:]
    for k in range(ens.K):
        nll = F.cross_entropy(logits[k].reshape(-1, logits.shape[-1]), y.reshape(-1), reduction='none').view(y.shape)
        assert res['members'][k]['overall']['ce'] == pytest.approx(float(nll.mean()), abs=1e-4)
        assert res['members'][k]['overall']['ppl'] == pytest.approx(math.exp(float(nll.mean())), rel=1e-4)
        assert res['members'][k]['by_domain']['code']['ce'] == pytest.approx(float(nll[2:4].mean()), abs=1e-4)
    lp = logits.log_softmax(-1)
    for rule in ('mean', 'product'):
        ref = -combine(lp, rule).gather(-1, y[..., None])[..., 0]
        assert res['ensemble'][rule]['overall']['ce'] == pytest.approx(float(ref.mean()), abs=1e-4)
    mean_mem = sum(m['overall']['ce'] for m in res['members']) / ens.K
    assert res['gain']['mean']['overall'] == pytest.approx(mean_mem - res['ensemble']['mean']['overall']['ce'])


def test_teacher_adapter_and_weighted(setup):
    teacher, tok, ens, toks, doms = setup
    members = ens.to_members()
    w = torch.rand(ens.K, len(toks))
    a = evaluate(TeacherAdapter(members), toks, doms, router_weights=w)
    b = evaluate(ens, toks, doms, router_weights=w)
    assert set(a['ensemble']) == {'mean', 'product', 'weighted'}
    for r in a['ensemble']: assert a['ensemble'][r]['overall']['ce'] == pytest.approx(b['ensemble'][r]['overall']['ce'], abs=1e-4)
    lp = brute(members, toks).log_softmax(-1)                               # [K,N,T-1,V]
    ref = -combine(lp, 'weighted', w).gather(-1, toks[:, 1:, None])[..., 0]
    assert b['ensemble']['weighted']['overall']['ce'] == pytest.approx(float(ref.mean()), abs=1e-4)
    t = evaluate(teacher, toks)                                            # a plain HF model, wrapped
    ref = F.cross_entropy(brute([teacher], toks)[0].reshape(-1, len(tok)), toks[:, 1:].reshape(-1))
    assert t['members'][0]['overall']['ce'] == pytest.approx(float(ref), abs=1e-4)


def test_identical_members(setup):
    teacher, tok, ens, toks, doms = setup
    one = ens.to_members()[0]
    same = PackedEnsemble.from_members([one, one, one])
    res = evaluate(same, toks, doms)
    for r in ('mean', 'product'):
        assert res['ensemble'][r]['overall']['ce'] == pytest.approx(res['members'][0]['overall']['ce'], abs=1e-5)
    assert res['diversity']['overall']['js'] == pytest.approx(0, abs=1e-6)
    assert res['diversity']['overall']['disagreement'] == 0


def test_ece_equal_width_and_equal_mass_by_hand():
    from ens_distill.stats import ece, reliability
    conf = torch.tensor([.05, .1, .55, .58, .62, .95, .99, .97])
    corr = torch.tensor([0., 0., 1., 0., 1., 1., 1., 0.])
    hand = (.05 + .1 + abs(1.13 - 1) + abs(.62 - 1) + abs(2.91 - 2)) / 8
    assert ece(conf, corr, mass=False)['ece'] == pytest.approx(hand)
    assert ece(conf, corr, 4)['ece'] == pytest.approx((.15 + .13 + abs(1.57 - 2) + abs(1.96 - 1)) / 8)
    rel = reliability(conf, corr, mass=False)
    assert sum(rel['count']) == 8 and rel['acc'][14] == pytest.approx(2 / 3)


def test_brier_and_stats_brute_force(setup):
    teacher, tok, ens, toks, doms = setup
    ts = token_stats(ens, toks, chunk=7, div_every=1)
    lp = brute(ens.to_members(), toks).log_softmax(-1).reshape(ens.K, -1, len(tok))   # [K,M,V]
    y = toks[:, 1:].reshape(-1)
    ref = (lp.exp() - F.one_hot(y, len(tok)).float()).pow(2).sum(-1)
    torch.testing.assert_close(ts.stats[STAT_FIELDS.index('brier'), :ens.K], ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ts.get('member1', 'conf'), lp[1].exp().max(-1).values, atol=1e-5, rtol=1e-4)
    js = torch.stack([js_div(lp[i], lp[j]) for i in range(3) for j in range(i + 1, 3)]).mean(0)
    torch.testing.assert_close(ts.div[0], js, atol=1e-5, rtol=1e-4)


def test_kl_zero_for_teacher_and_bpb(setup, tmp_path):
    teacher, tok, ens, toks, doms = setup
    cache = TopKCache.build(teacher, toks, tmp_path/'c', k=8, dtype='fp16', teacher_dtype='fp32', progress=False)
    res = evaluate(PackedEnsemble.from_members([teacher]), toks, doms, cache=cache, tokenizer=tok, holdout_domains=['dialog'])
    assert res['members'][0]['overall']['kl'] == pytest.approx(0, abs=1e-2)
    assert res['ensemble']['mean']['overall']['kl'] == pytest.approx(0, abs=1e-2)
    assert evaluate(ens, toks, doms, cache=cache)['members'][0]['overall']['kl'] > 100 * res['members'][0]['overall']['kl']
    for g in ('overall', 'in_domain', 'ood'):
        m = res['members'][0][g]
        assert m['bpb'] * m['bytes'] * math.log(2) == pytest.approx(m['nats'], rel=1e-9)
    assert res['members'][0]['ood']['ce'] == pytest.approx(res['members'][0]['by_domain']['dialog']['ce'])
    nbytes = sum(len(tok.decode(r[1:].tolist(), skip_special_tokens=True).encode()) for r in toks)
    assert res['members'][0]['overall']['bytes'] == nbytes
    flat = flatten_metrics(res)
    assert flat['members/0/ood/ppl'] == res['members'][0]['ood']['ppl'] and all(isinstance(v, float) for v in flat.values())


def test_temperature_scaling_undoes_sharpening(setup):
    "Targets sampled from a member; the same member with logits x2 scores better scaled back with T = 2."
    teacher, tok, ens, toks, doms = setup
    one = PackedEnsemble.from_members([ens.to_members()[0]])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, len(tok), (600, 1), generator=g)
    with torch.no_grad(): p = one(x0)[0, :, 0].softmax(-1)                 # [N,V]: next-token distribution
    seqs = torch.cat([x0, torch.multinomial(p, 1, generator=g)], 1)        # [N,2]: target sampled from the model
    sharp = PackedEnsemble.from_members([ens.to_members()[0]])
    with torch.no_grad(): sharp.norm.mul_(2.)                               # logits x2
    base = evaluate(sharp, seqs, batch_size=200, temperatures=dict(mean=2., product=2.))['ensemble']
    assert base['mean_ts']['overall']['ce'] < base['mean']['overall']['ce']


def test_bad_inputs(setup):
    teacher, tok, ens, toks, doms = setup
    with pytest.raises(EnsDistillError, match='domain labels'): evaluate(ens, toks, doms[:2])
    with pytest.raises(EnsDistillError, match='router_weights'): evaluate(ens, toks, rules=('weighted',))
    with pytest.raises(EnsDistillError, match='tokens must be'): evaluate(ens, toks[:, :1])
