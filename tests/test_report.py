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
    wide = '<table class="dataframe"><tr>' + '<th>a_very_long_column_name</th>' * 30 + '</tr><tr>' + '<td>NaN</td>' * 30 + '</tr></table>'
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
