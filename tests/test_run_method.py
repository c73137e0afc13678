"End-to-end smoke: nbs/run_method.ipynb through papermill for every method (smoke preset, tiny teacher)."
import json, math, os
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
