"scripts/study2.py: each seed gets its own run folder, and a budget other than the preset's its own folder under the preset's names."
import importlib.util
from pathlib import Path
from ens_distill.runs import run_path

spec = importlib.util.spec_from_file_location('study2', Path(__file__).parents[1]/'scripts'/'study2.py')
study2 = importlib.util.module_from_spec(spec); spec.loader.exec_module(study2)

def test_run_config_names_seed_and_budget():
    p = {s: run_path(study2.run_config('independent', s, 1024, {}, 'smoke')) for s in (0, 1)}
    assert p[0] != p[1] and p[1].name.endswith('-s1'), p                        # seed 1 is not skipped as seed 0's run
    assert p[0].parent.name == 'runs-1k' and p[0].name == 'independent-K2-tiny-s0'   # the folder spells the budget
    own = run_path(study2.run_config('teacher', 0, study2.get_config('smoke').tokens_per_member, {'K': 1}, 'smoke'))
    assert own.parent.name == 'runs' and own.name == 'teacher-K1-tiny-s0'


def test_scaling_predicts_the_held_out_point_before_it_runs(tmp_path, monkeypatch):
    "Fake grid runs from a known L(K, N): predict refuses an unfinished grid, heldout refuses before the prediction, fit scores it."
    import json, numpy as np, pytest
    from ens_distill.core import EnsDistillError
    from ens_distill.scaling import fake_run, law_kn, member_params
    monkeypatch.setattr(study2, 'out_dir', lambda tokens, preset='study': str(tmp_path/f'runs-{tokens}'))
    tokens, law = 1000, dict(E=2.0, A=40., a=.3, B=.5, b=.6)
    def fake(K, size, t=tokens):
        p = study2.scale_run(K, size, 0, t, 'smoke'); N = member_params(size, 384)
        fake_run(p.parent, K=K, size=size, test_ce=float(law_kn(K, N, **law)) + .002 * np.sin(K + N), name=p.name)
    with pytest.raises(EnsDistillError, match='scaling stage first'): study2.predict(tokens, [0], 'smoke', n_boot=10)
    for K, sz in study2.grid_points('smoke'): fake(K, sz)
    with pytest.raises(EnsDistillError, match='predict` stage first'): study2.run_step('heldout', [0], tokens, 'smoke')
    pred = study2.predict(tokens, [0], 'smoke', n_boot=20)
    K0, sz0 = study2.held_out('smoke'); truth = float(law_kn(K0, member_params(sz0, 384), **law))
    assert (K0, sz0) == (8, 'xs') and (K0, sz0) not in study2.grid_points('smoke')
    assert abs(pred['predictions']['KN']['test_ce'] - truth) < .02, pred
    f = tmp_path/f'runs-{tokens}'/'scaling'/'prediction.json'; before = f.read_text()
    study2.predict(tokens, [0], 'smoke', n_boot=20); assert f.read_text() == before           # never overwritten
    fake(K0, sz0)
    for K, t in study2.iso_points(tokens, 'smoke')[:-1]: fake(K, 'tiny', t)
    out = study2.fit(tokens, [0], 'smoke', n_boot=20)
    assert abs(out['prediction']['KN']['error']) < .02 and set(out['laws']) == {'KN', 'Neff'}
    lo, hi = out['laws']['KN']['profile_ci95']['b']; assert lo < law['b'] < hi
    assert len(out['iso_flops']) == 4 and (tmp_path/f'runs-{tokens}'/'sweeps'/'independent-per_member.csv').exists()
    assert (tmp_path/f'runs-{tokens}'/'scaling'/'scaling.png').exists()


def test_grid_and_schedule_runs_are_named_by_their_settings():
    "Schedules and grid points spell their settings, not a hash, in the budget's folder."
    assert run_path(study2.run_config('single', 0, 1024, dict(alpha_schedule='ramp_kd_ce'), 'smoke')).name == 'single-ramp_kd_ce-K2-tiny-s0'
    assert run_path(study2.run_config('independent', 0, 1024, dict(alpha=.5, tau=2.), 'smoke')).name == 'independent-a0.5-t2-K2-tiny-s0'
    assert 'grid' in study2.STEPS and study2.STEPS.index('grid') < study2.STEPS.index('scaling')


def test_summary_compares_every_entry_with_independent(tmp_path, monkeypatch):
    "Fake runs: an entry 0.1 nats better than independent reads supported with a CI around -0.1; the reference has none."
    from ens_distill.scaling import fake_run
    monkeypatch.setattr(study2, 'out_dir', lambda tokens, preset='study': str(tmp_path/'runs'))
    for s in (0, 1):
        fake_run(tmp_path/'runs', 'independent', K=2, seed=s, test_ce=3.0)
        fake_run(tmp_path/'runs', 'bagging', K=2, seed=s, test_ce=2.9)
    rows = {r['entry']: r for r in study2.summary(1024, 'smoke')}
    b = rows['bagging-K2-tiny']['vs_independent']
    assert b['verdict'] == 'supported' and b['lo'] < -.05 and b['hi'] < 0 and b['seeds'] == [0, 1], b
    assert 'vs_independent' not in rows['independent-K2-tiny'] and (tmp_path/'runs'/'comparisons.md').read_text().count('| bagging-K2') == 1
    assert '| bagging K=2 tiny | 2 | mean |' in (tmp_path/'runs'/'comparisons.md').read_text()   # the combination-rules table


def test_summary_one_seed_verdicts_respect_seed_noise(tmp_path, monkeypatch):
    "With one shared seed, a difference inside the seed-to-seed spread of a recipe reads inconclusive even when its CI excludes 0."
    from ens_distill.scaling import fake_run
    monkeypatch.setattr(study2, 'out_dir', lambda tokens, preset='study': str(tmp_path/'runs'))
    fake_run(tmp_path/'runs', 'independent', K=2, seed=0, test_ce=3.0); fake_run(tmp_path/'runs', 'independent', K=2, seed=1, test_ce=3.05)
    fake_run(tmp_path/'runs', 'bagging', K=2, seed=0, test_ce=2.98); fake_run(tmp_path/'runs', 'ncl', K=2, seed=0, test_ce=2.8)
    rows = {r['entry']: r['vs_independent'] for r in study2.summary(1024, 'smoke') if 'vs_independent' in r}
    assert abs(rows['bagging-K2-tiny']['seed_noise'] - .05) < 1e-6
    assert rows['bagging-K2-tiny']['ci_verdict'] == 'supported' and rows['bagging-K2-tiny']['verdict'] == 'inconclusive', rows
    assert rows['ncl-K2-tiny']['verdict'] == 'supported'


def test_objectives_run_on_the_best_ensemble_chosen_once(tmp_path, monkeypatch):
    "The objectives stage waits for every seed-0 method run, then picks the lowest test perplexity once and keeps it."
    import json, pytest
    from ens_distill.core import EnsDistillError
    from ens_distill.methods import method_names
    from ens_distill.scaling import fake_run
    monkeypatch.setattr(study2, 'out_dir', lambda tokens, preset='study': str(tmp_path/'runs'))
    ens = [(m, x) for m, x in study2.PAIR + study2.METHODS if m in method_names(ensemble=True) and x.get('K', 2) > 1]
    paths = [run_path(study2.run_config(m, 0, 1024, x, 'smoke')) for m, x in ens]
    for i, ((m, x), p) in enumerate(zip(ens, paths)):
        if i: fake_run(p.parent, m, K=2, test_ce=3.0 - (.1 if (m, x) == ('ncl', dict(ncl_lambda=.5, prune_layers='importance_offset')) else 0), name=p.name)
    with pytest.raises(EnsDistillError, match='methods stage first'): study2.objective_runs(1024, 'smoke')   # independent unfinished
    fake_run(paths[0].parent, 'independent', K=2, test_ce=3.05, name=paths[0].name)
    runs = study2.objective_runs(1024, 'smoke')
    assert runs[:3] == [('ncl', dict(ncl_lambda=.5, prune_layers='importance_offset', objective=o)) for o in ('rkl', 'jsd', 'skl')] and runs[3] == ('single', dict(objective='rkl'))
    fake_run(paths[0].parent, 'independent', K=2, test_ce=2.0, name=paths[0].name)   # a later change does not move the choice
    assert study2.best_ensemble(1024, 'smoke') == ('ncl', dict(ncl_lambda=.5, prune_layers='importance_offset'))
    assert json.loads((tmp_path/'runs'/'best_ensemble.json').read_text())['chosen_by'] == 'seed-0 test perplexity'
