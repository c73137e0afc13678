"lm-eval bridge: local tasks, the ens_distill model, the entry point (nbs/65_lmeval.ipynb)."
import os
import pytest
import torch
from lm_eval.api.instance import Instance
from ens_distill.core import EnsDistillError
from ens_distill.lmeval import *
from ens_distill.data import resolve_data_dir
from ens_distill.packed import PackedEnsemble
from ens_distill.teacher import tiny_teacher

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
slow = pytest.mark.skipif(not os.environ.get('ENS_DISTILL_SLOW'), reason='slow: set ENS_DISTILL_SLOW=1')
PAIRS = [("Once upon a time", " there was a fox"), ("The king ", "had three daughters."), ("", "Hello world"),
         ("Question: What is 2 + 3?\nAnswer:", " 5")]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A run dir with 3 identical tiny members, plus a different tiny model in other/."
    d = tmp_path_factory.mktemp('run')
    m, tok = tiny_teacher(seed=0)
    for i in range(3): m.save_pretrained(d/f'members/member_{i}'); tok.save_pretrained(d/f'members/member_{i}')
    o, _ = tiny_teacher(seed=1)
    o.save_pretrained(d/'other'); tok.save_pretrained(d/'other')
    return d


def reqs(kind, args): return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def brute(models, tok, ctx, cont, rule='mean'):
    "Continuation log-likelihood of the combined distribution, computed directly with full forwards."
    n = len(ctx) - len(ctx.rstrip())                                         # lm-eval moves trailing spaces to the continuation
    if n: ctx, cont = ctx[:-n], ctx[-n:] + cont
    c = tok.encode(ctx) if ctx else [tok.bos_token_id]
    w = tok.encode(ctx + cont)[len(c):] if ctx else tok.encode(cont)
    ids = torch.tensor([c + w])
    with torch.no_grad(): lp = torch.stack([m(ids).logits[0, :-1].log_softmax(-1) for m in models])   # [K,T,V]
    comb = lp.exp().mean(0).log() if rule == 'mean' else lp.mean(0).log_softmax(-1)
    return comb[torch.arange(len(c) - 1, len(c) + len(w) - 1), torch.tensor(w)].sum().item()


# ---- local tasks ----------------------------------------------------------------------------------------------
def test_every_local_task_loads_offline():
    tm = task_manager()
    names = local_task_names(tm)
    assert set(names) == {f'ed_{s}{v}' for s in ['arc_easy', 'arc_challenge', 'hellaswag', 'mmlu', 'mmlu_lite', 'boolq']
                          for v in ['', '_mc']} | {'ed_lambada', 'ed_gsm8k'}
    for name in names:
        t = tm.load([name])['tasks'][name]
        docs = list(t.test_docs().select(range(3)))
        assert len(docs) == 3
        for doc in docs:
            text = t.doc_to_text(doc)
            assert isinstance(text, str) and text
            if t.OUTPUT_TYPE == 'multiple_choice':
                ch = t.doc_to_choice(doc)
                assert len(ch) == len(doc['choices']) and 0 <= t.doc_to_target(doc) < len(ch)
                if name.endswith('_mc'): assert ch[0] == 'A' and ' A. ' in text and text.endswith('Answer:')
        assert t.fewshot_context(docs[1], num_fewshot=2)                      # few-shot examples are available
    g = tm.load(['ed_gsm8k'])['tasks']['ed_gsm8k']
    assert g.fewshot_context(g.test_docs()[0], num_fewshot=5).count('#### ') == 5   # first 5 train items


def test_fewshot_pools_exclude_the_item_itself():
    tm = task_manager()
    t = tm.load(['ed_arc_easy'])['tasks']['ed_arc_easy']
    doc = t.test_docs()[0]
    ex = t.sampler.sample(5, eval_doc=doc)
    assert doc not in ex and len(ex) == 5
    mm = tm.load(['ed_mmlu_lite_mc'])['tasks']['ed_mmlu_lite_mc']
    d = mm.test_docs()[-1]
    ctx = mm.fewshot_context(d, num_fewshot=5)
    assert ctx.startswith('The following are multiple choice questions (with answers) about world religions.')
    assert ctx.count('Answer:') == 6


def test_data_files_and_errors(tmp_path):
    assert resolve_data_dir().is_absolute()
    with pytest.raises(EnsDistillError, match='ENS_DISTILL_DATA'): resolve_data_dir(tmp_path/'nope')
    p = hellaswag_jsonl(cache_dir=tmp_path)
    assert p.exists() and hellaswag_jsonl(cache_dir=tmp_path) == p
    sp = local_splits('hellaswag', cache_dir=tmp_path)
    assert len(sp['test']) == 10042 and sp['fewshot'] == sp['test'][:FEWSHOT_POOL]
    assert len(local_splits('mmlu')['test']) == 14042 and len(local_splits('mmlu', subjects='lite')['test']) == 1117
    with pytest.raises(EnsDistillError, match="'piqa'"): local_splits('piqa')


# ---- the ens_distill model ------------------------------------------------------------------------------------
def test_member_paths(run_dir):
    assert [p.name for p in member_paths(run=run_dir)] == ['member_0', 'member_1', 'member_2']
    assert len(member_paths(members=f"{run_dir}/other|{run_dir}/members/member_0")) == 2
    for kw, msg in [(dict(run=run_dir/'other'), 'members/member_'), (dict(members='/no/x'), 'not found'), ({}, 'run=RUN_DIR')]:
        with pytest.raises(EnsDistillError, match=msg): member_paths(**kw)


@pytest.mark.parametrize('packed', ['auto', 'false'])
@pytest.mark.parametrize('rule', ['mean', 'product'])
def test_loglikelihood_equals_brute_force(run_dir, rule, packed):
    lm = EnsembleLM(members=f"{run_dir}/members/member_0|{run_dir}/other", combine=rule, packed=packed, device='cpu', batch_size=3)
    assert isinstance(lm.ens, PackedEnsemble) == (packed == 'auto')
    models = [m for m in lm.ens] if packed == 'false' else lm.ens.to_members()
    got = lm.loglikelihood(reqs('loglikelihood', PAIRS))
    want = [brute(models, lm.tokenizer, c, x, rule) for c, x in PAIRS]
    assert [g for g, _ in got] == pytest.approx(want, abs=1e-4)


def test_k_copies_equal_single_and_hf(run_dir):
    from lm_eval.models.huggingface import HFLM
    one = EnsembleLM(members=str(run_dir/'members/member_0'), device='cpu')
    three = EnsembleLM(run=str(run_dir), device='cpu', batch_size=2)
    hf = HFLM(pretrained=str(run_dir/'members/member_0'), device='cpu', dtype='float32', batch_size=2)
    a, b, c = (m.loglikelihood(reqs('loglikelihood', PAIRS)) for m in (one, three, hf))
    for x, y, z in zip(a, b, c):
        assert x[0] == pytest.approx(y[0], abs=1e-5) and x[0] == pytest.approx(z[0], abs=1e-5) and x[1] == y[1] == z[1]
    texts = [("The city is located on the river. " * 40,), ("Hi!",)]
    three._max_length = hf._max_length = 64                                  # several rolling windows
    r3, rh = three.loglikelihood_rolling(reqs('loglikelihood_rolling', texts)), hf.loglikelihood_rolling(reqs('loglikelihood_rolling', texts))
    assert r3 == pytest.approx(rh, rel=1e-6)                                  # a sum of ~400 fp32 terms


def test_generate_until_stops(run_dir):
    from lm_eval.models.huggingface import HFLM
    one = EnsembleLM(members=str(run_dir/'members/member_0'), device='cpu')
    three = EnsembleLM(run=str(run_dir), device='cpu')
    gk = dict(until=["\n\n"], max_gen_toks=10, do_sample=False)
    g1 = one.generate_until(reqs('generate_until', [("Once upon", gk), ("def add(a, b):", gk)]))
    assert g1 == three.generate_until(reqs('generate_until', [("Once upon", gk), ("def add(a, b):", gk)]))
    hf = HFLM(pretrained=str(run_dir/'members/member_0'), device='cpu', dtype='float32', batch_size=1)
    assert g1 == hf.generate_until(reqs('generate_until', [("Once upon", gk), ("def add(a, b):", gk)]))
    n = len(one.tokenizer.encode(g1[0]))
    assert 0 < n <= 10
    stop = g1[0][2:5]
    gs = one.generate_until(reqs('generate_until', [("Once upon", dict(gk, until=[stop]))]))
    assert gs[0] == g1[0].split(stop)[0] and stop not in gs[0]
    short = one.generate_until(reqs('generate_until', [("Once upon", dict(gk, max_gen_toks=2))]))
    assert len(one.tokenizer.encode(short[0])) <= 2 and g1[0].startswith(short[0])


# ---- evaluation and the entry point ---------------------------------------------------------------------------
def test_evaluate_tasks_k_copies_equal_hf(run_dir):
    tasks = ['ed_arc_easy', 'ed_hellaswag_mc', 'ed_lambada']
    r_ens = evaluate_tasks('ens_distill', tasks, model_args=dict(run=str(run_dir), device='cpu'), limit=3)
    r_hf = evaluate_tasks(run_dir/'members/member_0', tasks, limit=3, device='cpu')      # model_spec -> hf
    for t in tasks:
        assert r_ens[t]['n'] == 3
        for k, v in r_hf[t].items(): assert r_ens[t][k] == pytest.approx(v, rel=1e-4), (t, k)
    assert {'acc', 'acc_stderr', 'acc_norm', 'acc_norm_stderr'} <= set(r_ens['ed_arc_easy'])
    r = evaluate_tasks('ens_distill', ['ed_boolq'], model_args=dict(run=str(run_dir), device='cpu'), limit=4, sample='random', seed=3)
    assert r['ed_boolq']['n'] == 4


def test_model_spec(run_dir):
    assert model_spec(run_dir, combine='product') == ('ens_distill', f"run={run_dir.resolve()},combine=product,dtype=float32")
    assert model_spec(run_dir/'other') == ('hf', f"pretrained={(run_dir/'other').resolve()},dtype=float32")
    with pytest.raises(EnsDistillError, match='cannot score'): model_spec('/no/such')


def test_entry_point_help(capsys):
    for argv in (['--help'], ['run', '--help']):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert 'ens-distill-eval' in out and '--model_args' in out and '--include_path' in out


@slow
def test_entry_point_runs(run_dir, tmp_path):
    main(['run', '--model', 'ens_distill', '--model_args', f'run={run_dir},combine=mean', '--tasks', 'ed_arc_easy',
          '--limit', '2', '--device', 'cpu', '--output_path', str(tmp_path)])
    assert list(tmp_path.rglob('results_*.json'))


@slow
def test_teacher_hellaswag_sanity():
    r = evaluate_tasks('smollm2-135m-instruct', ['ed_hellaswag'], limit=200, batch_size=8, device='cpu')['ed_hellaswag']
    assert r['n'] == 200
    # Measured (bf16 teacher): first 200 items 0.405 / 0.470, first 500 0.378 / 0.428, first 1000 0.354 / 0.428.
    # The first 200 are all ActivityNet captions, easier than the WikiHow items that follow, and a 200-item accuracy
    # has a standard error of ~0.035, so "within a few points" of 0.36 / 0.40 is checked at ~2.3 standard errors.
    assert abs(r['acc'] - 0.36) < 0.08 and abs(r['acc_norm'] - 0.40) < 0.08, r

def test_routed_cbtm_scores_tasks_with_its_own_router(tmp_path):
    "A routed c-BTM run saves its router; tasks are scored with it (weighted by each request's context), not copied from mean."
    from ens_distill.core import get_config
    from ens_distill.pipeline import run_method
    cfg = get_config('smoke', method='cbtm', routing='tfidf', dtype='fp32', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'))
    run_method(cfg, progress=False, verbose=False)
    from ens_distill.runs import run_path
    run = run_path(cfg)
    assert (run/'router'/'route.json').exists() and run_rule(run) == ('weighted', run/'router')
    assert model_spec(run)[1].endswith(f"router={(run/'router').resolve()}")
    routed, mean = EnsembleLM(run=str(run), router=str(run/'router'), device='cpu'), EnsembleLM(run=str(run), combine='mean', device='cpu')
    reqs = [(('Once upon a time the king', ' said'), routed.tok_encode('Once upon a time the king'), routed.tok_encode(' said')),
            (('def add(a, b):', ' return'), routed.tok_encode('def add(a, b):'), routed.tok_encode(' return'))]
    w = routed.request_weights([r[0][0] for r in reqs])
    assert w.shape == (2, 2) and torch.allclose(w.sum(0), torch.ones(2)) and not torch.allclose(w, torch.full_like(w, .5))
    a, b = routed._loglikelihood_tokens(reqs), mean._loglikelihood_tokens(reqs)
    assert all(x[0] != y[0] for x, y in zip(a, b))
    r = run_tasks(run, ['ed_arc_easy'], limit=4, cache_dir=str(tmp_path/'cache'), dtype='float32')
    assert r['meta']['combine'] == 'weighted' and r['meta']['routed'] and r['meta']['seconds'] > 0


# ---- per-item records (#17) -------------------------------------------------------------------------------------
def test_run_tasks_keeps_per_item_records(run_dir, tmp_path):
    "run_tasks writes compact per-item arrays: correct matches acc, gold_ll is the gold answer's summed log-likelihood, p_max a choice probability."
    import json, math, shutil
    run = tmp_path/'run'; shutil.copytree(run_dir/'members', run/'members'); (run/'metrics.json').write_text(json.dumps(dict(method='independent')))
    lim = dict(ed_arc_easy=5, ed_lambada=3, default=2)
    r = run_tasks(run, ['ed_arc_easy', 'ed_lambada', 'ed_boolq'], limit=lim, dtype='float32', cache_dir=tmp_path/'cache')
    it = task_items(run)
    assert {t: len(v['id']) for t, v in it.items()} == {'ed_arc_easy': 5, 'ed_lambada': 3, 'ed_boolq': 2}
    for t, v in it.items():
        assert sum(v['correct']) / len(v['correct']) == pytest.approx(r['tasks'][t]['acc']) and v['id'] == sorted(v['id'])
    a = it['ed_arc_easy']
    assert all(1 / n - 1e-4 <= p <= 1 for p, n in zip(a['p_max'], a['n_choices'])) and all(n >= 3 for n in a['n_choices'])
    assert it['ed_lambada']['p_max'] == [None] * 3 and it['ed_lambada']['n_choices'] == [0] * 3
    t = task_manager().load(['ed_arc_easy'])['tasks']['ed_arc_easy']                   # the gold answer's log-likelihood, scored directly
    doc = t.test_docs()[a['id'][0]]
    lm = EnsembleLM(run=str(run), device='cpu')
    want = lm.loglikelihood(reqs('loglikelihood', [(t.doc_to_text(doc), ' ' + t.doc_to_choice(doc)[t.doc_to_target(doc)])]))[0][0]
    assert a['gold_ll'][0] == pytest.approx(want, abs=2e-3)
    raw = (run/'task_items.json').read_text()
    assert len(raw) < 80 * 10 + 600 and 'Question' not in raw and 'summed over its tokens' in raw   # arrays and a note, no prompts
    assert 'items' not in json.loads((run/'tasks.json').read_text())['tasks']['ed_arc_easy']
    c = compare_runs(run, run)                                                           # a run against itself: ties, no verdicts
    assert c.task.tolist() == ['ed_arc_easy', 'ed_boolq', 'ed_lambada'] and (c.verdict == 'inconclusive').all() and (c['diff'] == 0).all()
    s = task_summary(it['ed_arc_easy'])
    assert s['n'] == 5 and s['acc_lo'] <= s['acc'] <= s['acc_hi'] and s['gold_ll'] == pytest.approx(sum(a['gold_ll']) / 5) and s['answer_ece'] is not None
    h = headline_suite(run).set_index('task')
    assert h.loc['ed_arc_easy', 'above_chance'] is not None and h.loc['ed_arc_challenge', 'reason'] == 'secondary'
    assert not math.isnan(h.loc['ed_lambada', 'chance']) and h.loc['ed_lambada', 'chance'] == 0


def test_run_tasks_rescores_tasks_without_records(run_dir, tmp_path):
    "A task in tasks.json but missing from task_items.json is scored again (not skipped); the other tasks' records stay as they were."
    import json, shutil
    run = tmp_path/'run'; shutil.copytree(run_dir/'members', run/'members'); (run/'metrics.json').write_text(json.dumps(dict(method='independent')))
    r = run_tasks(run, ['ed_arc_easy', 'ed_boolq'], limit=3, dtype='float32', cache_dir=tmp_path/'cache')
    it = task_items(run); lost = json.loads((run/'task_items.json').read_text()); lost.pop('ed_boolq')
    (run/'task_items.json').write_text(json.dumps(lost))
    r2 = run_tasks(run, ['ed_arc_easy', 'ed_boolq'], limit=3, dtype='float32', cache_dir=tmp_path/'fresh')   # a fresh cache: really scored
    assert task_items(run) == it and r2['tasks'] == r['tasks'] and sorted(json.loads((run/'tasks.json').read_text())['tasks']) == ['ed_arc_easy', 'ed_boolq']
    assert list((tmp_path/'fresh').rglob('*.json'))                                        # boolq went through the scorer


def test_headline_suite_rule():
    "The headline keeps HEADLINE_TASKS; with teacher records, only those whose accuracy CI lies above chance."
    import numpy as np
    assert HEADLINE_TASKS == ['ed_arc_easy', 'ed_hellaswag', 'ed_lambada'] and HEADLINE_LIMIT['ed_arc_easy'] is None
    assert headline_suite().query('headline').task.tolist() == HEADLINE_TASKS
    rng = np.random.default_rng(0)
    rec = lambda p, n=4, U=2000: dict(id=list(range(U)), correct=(rng.random(U) < p).astype(int).tolist(), gold_ll=[-1.] * U, p_max=[.5] * U, n_choices=[n] * U)
    h = headline_suite({'ed_arc_easy': rec(.30), 'ed_hellaswag': rec(.26), 'ed_lambada': rec(.3, 0), 'ed_boolq': rec(.7, 2)}).set_index('task')
    assert h.headline.to_dict() == {'ed_arc_easy': True, 'ed_arc_challenge': False, 'ed_hellaswag': False, 'ed_mmlu_lite': False,
                                    'ed_lambada': True, 'ed_boolq': False, 'ed_gsm8k': False}
    assert h.loc['ed_hellaswag', 'acc_lo'] < .25 < h.loc['ed_arc_easy', 'acc_lo'] and h.loc['ed_boolq', 'above_chance']   # BoolQ passes, but stays secondary
