"Methods do what their names say: NCL's Jensen-gap objective, boosting's own data order per round."
import json, math
from dataclasses import replace
import pytest, torch
from ens_distill.core import get_config
from ens_distill.losses import forward_kl, student_buckets, teacher_buckets
from ens_distill.methods import Context, fit_plan, boost_plan, _all
from ens_distill.packed import PackedEnsemble, student_config
from ens_distill.pipeline import prepare_run, run_method
from ens_distill.runs import run_path
from ens_distill.train import Plan, MemberStreams, batch_loss

@pytest.fixture(scope='module')
def cache(tmp_path_factory): return str(tmp_path_factory.mktemp('cache'))

def smoke(tmp, cache, **kw): return get_config('smoke', out_dir=str(tmp/'runs'), cache_dir=cache, dtype='fp32', **kw)

def load_state(run):
    from ens_distill.packed import load_members
    return load_members(run/'members').state_dict()

def test_ncl_lambda0_is_independent_training_on_shared_batches(tmp_path, cache):
    "ncl at lambda=0 trains bit for bit the members of independent training on shared batches."
    cfg = smoke(tmp_path, cache, method='ncl', ncl_lambda=0.)
    m = run_method(cfg, progress=False, verbose=False)
    prep = prepare_run(cfg, progress=False, verbose=False)
    ctx = Context(cfg, prep['model'], prep['tokenizer'], prep['corpus'], prep['caches'], progress=False)
    ens, s = fit_plan(ctx, Plan(_all(ctx, cfg.K), shared=True))
    got = load_state(run_path(cfg))
    for n, t in ens.state_dict().items(): assert torch.equal(got[n], t.detach().cpu()), n
    assert s['steps'] == m['steps']

def test_ncl_gradient_matches_the_formula():
    "The NCL loss's gradient equals autograd of sum_k [(1-l) tau^2 KL(t||q_k) + l tau^2 K/K KL(t||mean q)] per token."
    torch.manual_seed(0)
    K, B, T, V, k, lam, tau = 3, 2, 6, 40, 5, .6, 2.
    ens = PackedEnsemble(student_config('tiny', V, initializer_range=.3), K)
    x = torch.randint(0, V, (B, T))[None].expand(K, B, T).contiguous()
    zt = torch.randn(B, T, V) * 2
    lp = zt.log_softmax(-1); top, ids = lp.topk(k, -1)
    tail = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-6))
    teacher = tuple(t[None].expand(K, *t.shape).contiguous() for t in (ids, top, tail))
    cfg = get_config('smoke', tau=tau, alpha=1.)
    loss, _ = batch_loss(ens, x, teacher, cfg, 1., ncl_lambda=lam)
    loss.backward(); got = {n: p.grad.clone() for n, p in ens.named_parameters()}
    ens.zero_grad()
    logits = ens(x[0])                                                      # [K,B,T,V]
    sb = student_buckets(logits, ids, tau)                                  # [K,B,T,k+1]
    tb = teacher_buckets(top, tail, tau)
    own = forward_kl(tb, sb) * tau**2                                       # [K,B,T]
    mix = forward_kl(tb, sb.exp().mean(0).log()) * tau**2                   # [B,T]
    mask = torch.ones(B, T); mask[:, -1] = 0
    ref = (((1 - lam) * own + lam * mix) * mask).sum((1, 2)) / mask.sum()    # per member, mean over tokens
    ref.sum().backward()
    for n, p in ens.named_parameters(): torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6)

def test_ncl_diversity_rises_with_lambda(tmp_path, cache):
    "On the smoke preset the members' pairwise JS grows from lambda=0 to 1 (measured: 0.0058, 0.0069, 0.0140)."
    js = [run_method(smoke(tmp_path, cache, method='ncl', ncl_lambda=l), progress=False, verbose=False)['js'] for l in (0., .5, 1.)]
    assert js[0] < js[1] < js[2] and js[2] > 1.5 * js[0], js

def test_boosting_rounds_draw_their_own_batches():
    "Two boosting rounds on all blocks (weighted mode) see different batches, as two independent members would."
    cfg = get_config('smoke', boost_mode='weighted')
    scores = torch.rand(64)
    streams = [MemberStreams(boost_plan(cfg, 64, scores, r).pools, 4, 0, member_ids=boost_plan(cfg, 64, scores, r).member_ids)
               for r in (1, 2)]
    same = sum(torch.equal(streams[0].next()[0], streams[1].next()[0]) for _ in range(40))
    assert same < 5, f'{same} of 40 identical batches'

def test_ncl_needs_forward_kl():
    with pytest.raises(Exception, match="ncl's mixture term is a forward KL"): get_config('smoke', method='ncl', objective='rkl')

def test_every_run_records_its_compute(tmp_path, cache):
    "Training, method overhead by kind, teacher cache and inference FLOPs per token, for boosting, synthetic and routed c-BTM."
    from ens_distill.compute import forward_flops
    runs = {m: run_method(smoke(tmp_path, cache, method=m, **kw), progress=False, verbose=False)
            for m, kw in [('independent', {}), ('boosting', {}), ('synthetic', {}), ('cbtm', dict(routing='learned'))]}
    ind, bo, sy, cb = runs.values()
    for m in runs.values():
        assert m['teacher_cache_flops'] > 0 and m['inference_flops_per_token'] == 2. * m['total_params']
        assert m['overhead_flops']['total'] == sum(v for k, v in m['overhead_flops'].items() if k != 'total')
    assert ind['overhead_flops']['total'] == 0 and bo['train_flops'] == ind['train_flops']
    N, T = len(prepare_run(smoke(tmp_path, cache), progress=False, verbose=False)['corpus'].tokens('train')), 32
    assert bo['overhead_flops']['boost_scoring'] == forward_flops(bo['params_per_member'], N * T)   # K=2: one scoring pass of one member
    assert sy['overhead_flops']['synthetic_generation'] > 0 and sy['overhead_flops']['synthetic_cache'] == sy['synthetic_cache_flops'] > 0
    assert cb['overhead_flops']['router'] > 0

def test_held_out_domain_is_test_only_and_routing_reads_only_the_prefix(tmp_path, cache):
    "Nothing fitted sees the OOD domain; a block is routed on its first route_prefix tokens, which nobody is scored on."
    from ens_distill.routing import route_features
    cfg = smoke(tmp_path, cache, method='cbtm', routing='learned', holdout_domains=['dialog'])
    prep = prepare_run(cfg, progress=False, verbose=False)
    c = prep['corpus']
    assert 'dialog' not in set(c.block_domains('dev')) | set(c.block_domains('train')) and 'dialog' in c.block_domains('test')
    ctx = Context(cfg, prep['model'], prep['tokenizer'], c, prep['caches'], progress=False)
    d, has = route_features(ctx, 'test')
    P, toks = cfg.route_prefix, c.tokens('test')
    class Shuffled:                                        # the same blocks with every token after the prefix changed
        def __init__(self, c): self.c, self.router = c, c.router
        def tokens(self, s): t = self.c.tokens(s).clone(); t[:, P:] = t[:, P:].flip(0); return t
    d2, _ = route_features(replace(ctx, corpus=Shuffled(c)), 'test')
    assert has.all() and torch.equal(d, d2)
    m = run_method(cfg, progress=False, verbose=False)
    ev = json.loads((run_path(cfg)/'eval.json').read_text())
    n = len(toks) * (toks.shape[1] - 1 - P)
    assert ev['meta']['skip'] == P and m['rule'] == 'weighted'
    assert {r['overall']['n_tokens'] for r in list(ev['ensemble'].values()) + ev['members']} == {n}

def test_members_pruned_from_the_teacher(tmp_path, cache):
    "p<L> members are the teacher cut to L layers: untrained p<all> equals the teacher; offset members differ; saved members load alone."
    from transformers import AutoModelForCausalLM
    raw = run_method(smoke(tmp_path, cache, method='raw', size='p2', K=1), progress=False, verbose=False)
    teacher = run_method(smoke(tmp_path, cache, method='teacher'), progress=False, verbose=False)
    assert abs(raw['test_ppl'] - teacher['test_ppl']) <= 1e-4 * teacher['test_ppl']
    cp = smoke(tmp_path, cache, method='independent', size='p1', prune_layers='offset')
    m = run_method(cp, progress=False, verbose=False)
    run = run_path(cp)
    a, b = (AutoModelForCausalLM.from_pretrained(run/'members'/f'member_{k}') for k in (0, 1))
    assert a.config.num_hidden_layers == 1 and math.isfinite(m['test_ppl'])
    imp = run_method(smoke(tmp_path, cache, method='single', size='p1', prune_layers='importance'), progress=False, verbose=False)
    assert math.isfinite(imp['test_ppl'])
    with pytest.raises(Exception, match="config key 'size'"): get_config('smoke', size='xxl')
    with pytest.raises(Exception, match='p1..p2'): run_method(smoke(tmp_path, cache, method='raw', size='p3'), progress=False, verbose=False)
    with pytest.raises(Exception, match="stay identical copies; set prune_layers='importance_offset'"):   # shared batches + one layer subset: K copies
        run_method(smoke(tmp_path, cache, method='ncl', size='p1', prune_layers='even'), progress=False, verbose=False)
    nc = run_method(smoke(tmp_path, cache, method='ncl', size='p1', prune_layers='importance_offset', ncl_lambda=.5), progress=False, verbose=False)
    assert nc['ensemble_gain'] > 0 and math.isfinite(nc['test_ppl'])
