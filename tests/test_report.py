"Report: run collection, leaderboard, data-driven win conditions, the published site in headless Chromium, the explorer."
import base64, io, json, math, os, re, shutil, subprocess
from pathlib import Path
import pytest, torch
from PIL import Image
from ens_distill.core import get_config, to_yaml
from ens_distill.scaling import fake_run
from ens_distill.report import *

CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
TASKS = lambda a, b: {'ed_arc_easy': dict(acc=a), 'ed_boolq': dict(acc=b), 'ed_piqa': dict(acc=.5)}

def _runs(root, ens_ce=3.0, sm_ce=3.1, cbtm_ce=2.9):
    for s in (0, 1):
        fake_run(root, 'independent', 4, 'tiny', s, ens_ce + s / 50, tasks=TASKS(.45, .62))
        fake_run(root, 'single_matched', 4, 'tiny', s, sm_ce + s / 50, tasks=TASKS(.40, .60))
        fake_run(root, 'cbtm', 4, 'tiny', s, cbtm_ce + s / 50, routing='tfidf', ood_ppl=30., in_domain_ppl=20.)
    return collect_runs(root)

def _items(run, p, U=300, seed=0):
    "Per-item ARC-Easy and LAMBADA records (as lmeval.run_tasks writes them) with accuracy about p, in a fake run folder."
    import numpy as np
    rng = np.random.default_rng(seed)
    rec = lambda n: dict(id=list(range(U)), correct=(rng.random(U) < p).astype(int).tolist(), gold_ll=rng.normal(-9, 2, U).round(3).tolist(),
                         p_max=rng.uniform(.3, .9, U).round(3).tolist() if n else [None] * U, n_choices=[n] * U)
    (Path(run)/'task_items.json').write_text(json.dumps({'ed_arc_easy': rec(4), 'ed_lambada': rec(0)}))

def test_task_cis_from_per_item_records(tmp_path):
    "Per-task accuracy with 95% CIs where runs kept per-item records, 'n/a (no per-item data)' elsewhere; gold log-likelihood and answer ECE next to it."
    df = _runs(tmp_path)
    tc = task_cis(df)
    assert len(tc) and set(tc.interval) == {'n/a (no per-item data)'} and task_evidence_table(tc).empty
    assert task_ci_table(tc)['boolq'].str.endswith('CI n/a (no per-item data)').all()
    for s in (0, 1): _items(tmp_path/f'independent-K4-tiny-s{s}', .45, seed=s)
    tc = task_cis(collect_runs(tmp_path)).set_index(['entry', 'task'])
    e = tc.loc[('independent K=4 tiny', 'ed_arc_easy')]
    assert (e.interval, e.n, e.seeds, e.chance) == ('95% CI over items and seeds', 300, 2, .25) and e.acc_lo < e.acc < e.acc_hi < e.acc_lo + .2
    assert e.gold_ll_lo < e.gold_ll < e.gold_ll_hi and e.answer_ece_informative
    assert tc.loc[('independent K=4 tiny', 'ed_lambada')].chance == 0 and tc.loc[('single_matched K=4 tiny', 'ed_arc_easy')].interval == 'n/a (no per-item data)'
    tc = tc.reset_index(); w = task_ci_table(tc)
    assert list(w.columns[:3]) == ['entry', 'arc_easy*', 'lambada*']                     # the headline suite first
    ev = task_evidence_table(tc)
    assert ev.task.tolist() == ['arc_easy', 'lambada'] and ev['answer ECE'][1] == 'n/a (open answer)' and '[' in ev['gold log-likelihood, nats [95% CI]'][0]
    import matplotlib; matplotlib.use('Agg')
    axs = plot_tasks(tc); assert len(axs) == 4 and axs[0].get_xlabel() == 'accuracy (fraction correct)'

def test_leaderboard_and_missing(tmp_path):
    df = _runs(tmp_path)
    lb = leaderboard(df)
    assert lb.method.tolist() == ['cbtm', 'independent', 'single_matched'] and (lb.n_seeds == 2).all()
    assert abs(lb.test_ppl_mean[0] - (math.exp(2.9) + math.exp(2.92)) / 2) < 1e-9 and lb.test_ppl_sd[0] > 0
    f = format_leaderboard(lb); assert '±' in f['test ppl'][0] and 'ed_boolq' in f
    assert 'single' in missing_methods(df) and 'cbtm' not in missing_methods(df)

def test_win_conditions_follow_the_data(tmp_path):
    lat = tmp_path/'latency.json'; lat.write_text(json.dumps([dict(name='single', K=1, ms_per_token=5.), dict(name='packed', K=4, ms_per_token=6.)]))
    wc = win_conditions(_runs(tmp_path/'a'), load_latency(lat))
    assert wc.verdict.tolist() == ['no data', 'supported', 'supported', 'supported'], wc.evidence.tolist()
    wc = win_conditions(_runs(tmp_path/'b', ens_ce=3.3, cbtm_ce=3.5), load_latency(tmp_path/'none.json'))
    assert wc.verdict.tolist() == ['no data', 'contradicted', 'contradicted', 'no data'], wc.evidence.tolist()   # CIs exclude 0 the other way
    assert win_conditions(collect_runs(tmp_path/'empty')).verdict.tolist() == ['no data'] * 4

def test_answers_compare_matched_entries(tmp_path):
    "Each question's verdict on fake runs of known outcome; an entry at another K is never compared, a best-of-several pick is flagged."
    import ens_distill.report as R
    for s in (0, 1):
        fake_run(tmp_path, 'independent', 4, 'tiny', s, 3.0 + s / 100)
        fake_run(tmp_path, 'cbtm', 4, 'tiny', s, 2.9 + s / 100, routing='tfidf')
        fake_run(tmp_path, 'ncl', 4, 'tiny', s, 2.95 + s / 100)
        fake_run(tmp_path, 'synthetic', 4, 'tiny', s, 3.3 + s / 100)
        for a, ce in ((.5, 2.8), (.25, 2.85)): fake_run(tmp_path, 'independent', 4, 'tiny', s, ce + s / 100, objective='rkl', alpha=a, name=f'independent-rkl-a{a}-K4-tiny-s{s}')
        fake_run(tmp_path, 'independent', 2, 'tiny', s, 2.5, objective='rkl', name=f'independent-rkl-K2-tiny-s{s}')   # unmatched: no K=2 default run
        fake_run(tmp_path, 'synthetic', 2, 'tiny', s, 2.0)                                                          # unmatched: no K=2 independent run
    df = collect_runs(tmp_path); lb = leaderboard(df)
    an = answers(df)
    assert an.verdict.tolist() == ['supported', 'supported', 'supported', 'contradicted', 'no data', 'no data'], an.answer.tolist()
    assert all('K=2' not in a for a in an.answer), an.answer.tolist()          # the K=2 entries (better on paper) are never compared
    assert an.answer[0].startswith('Best of 4 ways') and 'cbtm-tfidf K=4 tiny' in an.answer[0] and 'chosen on the test set; the CI is optimistic' in an.answer[0]
    assert 'the best setting (rkl, alpha 0.5, tau 1)' in an.answer[1] and 'chosen on the test set' in an.answer[1]
    assert 'synthetic K=4 tiny' in an.answer[3] and 'chosen on the test set' not in an.answer[3]   # one independent entry there: nothing picked
    assert R._q_objective(df, lb[lb.K == 2]) == ('no runs vary the objective, alpha or tau', 'no data')
    assert R._q_data(df, lb[(lb.K == 2) | (lb.method != 'synthetic')])[1] == 'no data'
    assert R._q_special(df, lb)[1] == 'supported' and R._q_members(df, lb[lb.method != 'cbtm'])[1] == 'supported'   # ncl 2.95 vs 3.0

def test_task_ci_table_tells_apart_entries_sharing_a_label(tmp_path):
    "Entries differing only in tokens per member get one row each (not one merged row or a pivot error)."
    for t, p in ((1000, .2), (2000, .8)):
        for s in (0, 1): _items(fake_run(tmp_path/f't{t}', 'independent', 4, 'tiny', s, 3.0, tokens_per_member=t), p, seed=s)   # same run name and variant
    w = task_ci_table(task_cis(collect_runs(tmp_path))).set_index('entry')
    assert len(w) == 2 and float(w.loc['independent K=4 tiny tokens_per_member=1000', 'arc_easy*'].split()[0]) < .3 < float(w.loc['independent K=4 tiny tokens_per_member=2000', 'arc_easy*'].split()[0])

def test_task_cis_names_the_run_whose_seeds_scored_other_items(tmp_path):
    "Seeds of one entry scored on different items: a one-line EnsDistillError naming the run (as lmeval._stack refuses them), not a silent drop."
    from ens_distill.core import EnsDistillError
    df = _runs(tmp_path); _items(tmp_path/'independent-K4-tiny-s0', .45); _items(tmp_path/'independent-K4-tiny-s1', .45, U=200)
    with pytest.raises(EnsDistillError, match='independent-K4-tiny-s1.*cover other items'): task_cis(df)

def test_matched_task_wins_need_per_item_cis(tmp_path):
    "Condition 1 counts a task as won from per-item records only when its CI excludes 0; tasks without records use seed means, labelled."
    df = _runs(tmp_path)
    assert win_conditions(df).verdict[1] == 'supported'                        # seed means: ahead on arc_easy and boolq
    for s in (0, 1):
        _items(tmp_path/f'independent-K4-tiny-s{s}', .45, seed=s); _items(tmp_path/f'single_matched-K4-tiny-s{s}', .45, seed=10 + s)
    w = win_conditions(collect_runs(tmp_path)).iloc[1]
    assert w.verdict == 'inconclusive' and 'ahead on 1 of 3 tasks (ed_boolq: seed means, no per-item CI)' in w.evidence, w.evidence
    for s in (0, 1): _items(tmp_path/f'single_matched-K4-tiny-s{s}', .25, seed=10 + s)
    w = win_conditions(collect_runs(tmp_path)).iloc[1]
    assert w.verdict == 'supported' and 'ed_arc_easy: per-item 95% CI; ed_boolq: seed means, no per-item CI' in w.evidence, w.evidence

def test_publish_without_chromium(tmp_path, monkeypatch, capsys):
    "Without Chromium: no screenshots (none copied from the last build) and a note; the leaderboard and the specialization bootstraps run once; a NaN table cell stays visible."
    import nbformat, ens_distill.report as R
    from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell, new_output
    runs = tmp_path/'runs'; _runs(runs)
    done = tmp_path/'report.ipynb'
    nbformat.write(new_notebook(cells=[new_markdown_cell('# Report'), new_code_cell('t', outputs=[new_output('display_data', {'text/html': '<table><tr><td>NaN</td></tr></table>'})])]), str(done))
    site = tmp_path/'site'; site.mkdir()
    for n in SHOTS: (site/n).write_bytes(b'old')
    calls = {'leaderboard': 0, 'win_specialization': 0}
    def count(f):
        def g(*a, **k): calls[f.__name__] += 1; return f(*a, **k)
        return g
    for f in (R.leaderboard, R.win_specialization): monkeypatch.setattr(R, f.__name__, count(f))
    monkeypatch.setattr(R, '_chromium', lambda: None)
    idx = publish(runs, site, execute=False, executed_nb=done, sweeps_dir=tmp_path/'sweeps', latency=tmp_path/'none.json', bench=tmp_path/'none.json', n_boot=10)
    assert not [n for n in SHOTS if (site/n).exists()] and 'no screenshots: they need headless Chromium' in capsys.readouterr().out
    assert calls == {'leaderboard': 1, 'win_specialization': 1}, calls
    assert '<td>NaN</td>' in (site/'report.html').read_text() and 'Does specialization help?' in idx.read_text()

def _png_ok(src):
    from PIL import Image
    assert src.startswith('data:image/'), src[:60]
    Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))).verify()

@pytest.mark.skipif(CHROMIUM is None, reason='headless Chromium not installed (Debian: apt-get install -y chromium); skipping the rendering check')
def test_published_site_renders_in_chromium(tmp_path):
    "Every page of a published site, opened in headless Chromium at 1400 x 900: no NaN/inf/Traceback, titles, alt texts, links, no sideways scroll."
    import nbformat, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell, new_output
    runs = tmp_path/'runs'; _runs(runs); _items(runs/'independent-K4-tiny-s0', .45)
    buf = io.BytesIO(); plt.figure(figsize=(2, 1)); plt.plot([1, 2]); plt.savefig(buf, format='png'); plt.close()
    wide = '<table class="dataframe"><tr>' + '<th>a_very_long_column_name</th>' * 30 + '</tr><tr>' + '<td>n/a</td>' * 30 + '</tr></table>'
    nbformat.write(new_notebook(cells=[new_markdown_cell('# A run'), new_code_cell('plot()', outputs=[
        new_output('display_data', {'image/png': base64.b64encode(buf.getvalue()).decode(), 'text/plain': 'f'}),
        new_output('stream', name='stderr', text='Traceback (most recent call last): a warning'), new_output('display_data', {'text/html': wide})])]),
                   str(runs/'independent-smoke.ipynb'))
    idx = publish(runs, tmp_path/'site', sweeps_dir=tmp_path/'sweeps', latency=tmp_path/'none.json', bench=tmp_path/'none.json', n_boot=10)
    site = idx.parent; pages = sorted(site.rglob('*.html'))
    assert {p.name for p in pages} == {'index.html', 'report.html', 'independent-smoke.html'}
    assert check_site(site) == []                               # every page, at 1400 px
    index = idx.read_text()
    assert 'Does specialization help?' in index and 'id="wins"' in index and 'runs/independent-smoke.html' in index
    report = (site/'report.html').read_text()
    assert 'Per-task accuracy with 95% CIs' in report and 'CI n/a (no per-item data)' in report and 'gold log-likelihood' in report
    for s in re.findall(r'<img[^>]*\ssrc="([^"]*)"', ''.join(p.read_text() for p in pages)): _png_ok(s)
    for name in SHOTS: Image.open(site/name).verify()            # the README's screenshots
    (site/'report.html').write_text((site/'report.html').read_text().replace('</body>', '<p>ppl nan</p><a href="gone.html">x</a></body>'))
    assert [p.split(':')[0] for p in check_site(site)] == ['report.html'] * 2

def test_explorer_static(tmp_path):
    from ens_distill.teacher import tiny_teacher
    from ens_distill.packed import PackedEnsemble, student_config
    from ens_distill.explorer import explore, run_dirs
    os.environ['ENS_DISTILL_STATIC'] = '1'
    import matplotlib; matplotlib.use('Agg')
    run = tmp_path/'runs'/'cbtm-K2-tiny-s0'; _, tok = tiny_teacher()
    torch.manual_seed(0); PackedEnsemble(student_config('tiny', len(tok)), 2).save_members(run/'members', tok)
    to_yaml(get_config('smoke', method='cbtm', routing='tfidf', cache_dir=str(tmp_path/'cache'), data_dir=str(tmp_path/'nodata')), run/'config.yaml')
    assert run_dirs(tmp_path/'runs') == [str(run)]
    a = explore(run, 'Once upon a time', k=10)
    assert {'teacher', 'mean', 'product', 'member 0', 'member 1'} <= set(a['tables']) and len(a['tables']['mean']) == 10
    assert a['routing'].startswith('uniform') and abs(sum(a['weights']) - 1) < 1e-6      # no corpus router here -> uniform
    assert (a['kl'] >= -1e-5).all() and len(a['kl']) == len(a['tokens'])

def test_leaderboard_flags_entries_that_do_not_beat_the_bigram(tmp_path):
    from ens_distill.scaling import fake_run
    fake_run(tmp_path, 'bigram', 1, 'tiny', 0, 5.0)
    fake_run(tmp_path, 'independent', 4, 'tiny', 0, 4.0)
    fake_run(tmp_path, 'ncl', 4, 'tiny', 0, 6.0)
    t = format_leaderboard(leaderboard(collect_runs(tmp_path))).set_index('method')
    assert t.loc['independent', 'beats bigram'] == 'yes' and t.loc['ncl', 'beats bigram'] == 'NO' and t.loc['bigram', 'beats bigram'] == ''

def test_headline_pair_matches_the_configured_budget(tmp_path):
    "single_large trains on the tokens that match the ensemble's FLOPs: the pair is found by the configured budget, not the trained tokens."
    for s in (0, 1):
        fake_run(tmp_path, 'independent', 4, 'tiny', s, 3.0 + s / 50)
        p = fake_run(tmp_path, 'single_large', 4, 'tiny', s, 2.5 + s / 50)
        m = json.loads((p/'metrics.json').read_text()); m.update(K=1, tokens_per_member=2 * m['tokens_per_member'])
        (p/'metrics.json').write_text(json.dumps(m))
    wc = win_conditions(collect_runs(tmp_path))
    assert wc.verdict.tolist()[0] == 'contradicted', wc.evidence.tolist()[0]    # one larger student beats the 4 members
