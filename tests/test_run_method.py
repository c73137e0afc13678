"End-to-end smoke: nbs/run_method.ipynb through papermill for every method (smoke preset, tiny teacher)."
import csv, json, math, os
from pathlib import Path
import pytest, papermill as pm
from transformers import AutoModelForCausalLM
from ens_distill.methods import METHODS
from ens_distill.runs import entry_name

NB = Path(__file__).resolve().parents[1]/'nbs'/'run_method.ipynb'

@pytest.fixture(scope='module')
def cache(tmp_path_factory): return str(tmp_path_factory.mktemp('cache'))

def _run(out, cache, **params):
    os.environ.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    pm.execute_notebook(str(NB), str(out/'out.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(preset='smoke', out_dir=str(out/'runs'), cache_dir=cache, **params))

@pytest.mark.parametrize('method', sorted(METHODS))
def test_every_method_runs(method, tmp_path, cache):
    _run(tmp_path, cache, method=method, **({'routing': 'tfidf'} if method == 'cbtm' else {}))
    runs = [p for p in (tmp_path/'runs').iterdir() if p.is_dir()]
    assert len(runs) == 1
    m = json.loads((runs[0]/'metrics.json').read_text())
    if method in ('unigram', 'bigram'):                      # floors: count models, scored like every entry, no members
        assert m['method'] == method and math.isfinite(m['test_ppl']) and m['test_ppl'] > 1 and m['ppl_by_domain']
        return
    for k in ('test_ppl', 'mean_member_ppl', 'kl_teacher', 'ece', 'ensemble_gain', 'train_flops', 'teacher_cache_flops'):
        assert k in m and math.isfinite(m[k]), k
    assert m['method'] == method and m['test_ppl'] > 1
    ev = json.loads((runs[0]/'eval.json').read_text())
    assert {'mean', 'product'} <= set(ev['ensemble']) and len(ev['members']) == m['K']
    members = sorted((runs[0]/'members').glob('member_*'))
    assert len(members) == m['K']
    AutoModelForCausalLM.from_pretrained(members[-1])
    assert (tmp_path/'runs'/f"{entry_name(runs[0].name)}.summary.json").exists()

def test_unknown_method_fails_at_once(tmp_path, cache):
    with pytest.raises(pm.PapermillExecutionError, match="config key 'method'"):
        _run(tmp_path, cache, method='magic')
    assert not (tmp_path/'runs').exists()

def test_grid_chooses_tau_and_run_method_reuses_it(tmp_path, cache):
    os.environ.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    pm.execute_notebook(str(NB.with_name('run_grid.ipynb')), str(tmp_path/'grid.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(preset='smoke', method='single', alphas=[0.0, 1.0], taus=[1.0, 2.0],
                                        out_dir=str(tmp_path/'runs'), cache_dir=cache))
    choice = json.loads((tmp_path/'runs'/'tau_choice.json').read_text())
    # alpha 0 (pure CE) ignores tau, so it runs once: 3 points, and the table also goes to grid-<name>.json
    assert choice['tau'] in (1.0, 2.0) and sorted((r['alpha'], r['tau']) for r in choice['grid']) == [(0.0, 1.0), (1.0, 1.0), (1.0, 2.0)]
    assert json.loads((tmp_path/'runs'/'grid-single-K2-tiny.json').read_text())['grid'] == choice['grid']
    assert all(math.isfinite(r['dev_ppl']) for r in choice['grid'])
    _run(tmp_path, cache, method='independent')
    m = json.loads(next((tmp_path/'runs').glob('independent*/metrics.json')).read_text())
    assert m['tau'] == choice['tau']

def _noise(nb_path:Path)->list:
    "What an executed notebook shows besides its results: stderr blocks (warnings, text bars) and widget outputs (progress bars)."
    nb = json.loads(Path(nb_path).read_text())
    outs = [o for c in nb['cells'] for o in c.get('outputs', [])]
    return ([''.join(o.get('text', ''))[:200] for o in outs if o.get('output_type') == 'stream' and o.get('name') == 'stderr']
            + [str(o['data'].get('text/plain', ''))[:200] for o in outs if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})])

def test_executed_notebooks_are_quiet_and_tensorboard_reads_the_run(tmp_path, cache):
    "`make demo`'s notebook (smoke preset, report_to csv + tensorboard) and the task notebook on its run: no stderr block, no progress bar; the event files hold metrics.csv's rows and metrics.json's numbers."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _run(tmp_path, cache, method='independent', report_to=['csv', 'tensorboard'])
    assert _noise(tmp_path/'out.ipynb') == []
    run = next(p for p in (tmp_path/'runs').iterdir() if p.is_dir())
    assert len(list(run.glob('events.out.tfevents.*'))) == 1 and (run/'metrics.csv').exists()
    ea = EventAccumulator(str(run)); ea.Reload()
    tags, m = set(ea.Tags()['scalars']), json.loads((run/'metrics.json').read_text())
    assert {'train/loss', 'train/loss_m0', 'train/loss_m1', 'train/lr', 'train/grad_norm', 'train/tokens_per_s',
            'eval/test_ppl', 'eval/kl_teacher', 'eval/ece', 'eval/mean_member_ppl'} <= tags, sorted(tags)
    rows = list(csv.DictReader(open(run/'metrics.csv')))
    for tag, col in (('train/loss', 'loss'), ('train/loss_m1', 'loss_m1'), ('train/lr', 'lr'), ('train/grad_norm', 'grad_norm')):
        got = [(e.step, e.value) for e in ea.Scalars(tag)]
        assert got == [(int(r['step']), pytest.approx(float(r[col]), rel=1e-6)) for r in rows], tag   # float32 in the event file
    assert all(e.value > 0 for e in ea.Scalars('train/tokens_per_s'))
    ev = ea.Scalars('eval/test_ppl'); assert len(ev) == 1 and ev[0].value == pytest.approx(m['test_ppl'], rel=1e-6) and ev[0].step == int(rows[-1]['step'])
    assert {f'eval/ppl_by_domain/{d}' for d in m['ppl_by_domain']} <= tags
    pm.execute_notebook(str(NB.with_name('run_tasks.ipynb')), str(tmp_path/'tasks.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(runs=[str(run)], tasks=['ed_arc_easy', 'ed_lambada'], limit=4, gen_limit=2))
    assert _noise(tmp_path/'tasks.ipynb') == []
    assert {'ed_arc_easy', 'ed_lambada'} <= set(json.loads((run/'tasks.json').read_text())['tasks'])
