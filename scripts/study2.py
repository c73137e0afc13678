"""The second study (issues #15 and #19): the `study` preset's runs in priority order, through `nbs/run_method.ipynb`.

usage: python scripts/study2.py [STAGE ...] [--seeds 0 1 2] [--tokens N]

stages (default: refs pair controls; then methods, objectives):
- refs: the reference points on the same test split: the frozen teacher and the unigram and bigram floors (seed 0:
        nothing in them depends on the seed);
- pair: the brief's headline pair at K=4 of the preset's member size (`p8f672g2`): `independent` (4 members) against
        `single_large` (one `p20f1280g2`, 4x their non-embedding parameters, given the tokens that spend the
        ensemble's training FLOPs, head included);
- controls: `single_matched` (one member-sized student with 4x the tokens) and `single` (one with the members' tokens);
- methods: every other ensemble method at K=4 (bagging; c-BTM with uniform, tf-idf and learned routing; boosting top-q
        10% and 25% and weighted; NCL at lambda 0, 0.5 and 1; synthetic teacher data; `offset` layer subsets as the
        source of diversity), `raw` and the teacher finetuned with the ensemble's budget (`teacher_ft`);
- objectives: reverse KL, JSD and skew KL for the best ensemble and for `single` (forward KL is the methods' objective).
        The best ensemble is the K-member entry with the lowest seed-0 test perplexity once every method run of seed 0
        has finished, chosen once and kept in `<out>/best_ensemble.json`;
- grid: `single` over alpha in {0, 0.5, 1} x tau in {1, 2} (`nbs/run_grid.ipynb`, chosen on dev perplexity, written to
        `<out>/grid-single-K4-<size>.json`; not recorded as `tau_choice.json`, so no other run changes), the alpha
        schedules KD->CE and CE->KD for `single`, and the chosen (alpha, tau) pair applied, as a pair, to the best ensemble;
- scaling: `independent` at K in {1, 2, 4, 8} x member sizes p2/p4/p8/p16 (f672, g2; N 3.5M to 28M non-embedding
        parameters) at the members' tokens, cheapest first, except the held-out point (K=8, p16f672g2); then the
        iso-FLOP slice: the K=4 ensemble's total tokens split over K in {1, 2, 8} members of the preset's size;
- predict: fits both L(K, N) forms to the scaling grid and writes `<out>/scaling/prediction.json` (never overwritten):
        the held-out point's test CE, predicted before it runs;
- heldout: runs the held-out point (refused until the prediction exists);
- summary: `<out>/comparisons.md` (and `.json`): every entry of the folder (runs grouped over seeds) with test and
        training-domain perplexity, training and inference cost, and its test CE difference against `independent` (K=4,
        the preset's size) with a 95% CI from a paired bootstrap over test documents and shared seeds, and a verdict;
        then headline-task accuracy with 95% CIs for the entries scored on tasks. Every README number of the study comes
        from it;
- fit: the sweep tables (`<out>/sweeps/*.csv`), both forms' parameters with bootstrap and profile-likelihood 95%
        intervals, their leave-one-point-out errors, the prediction's error, and the figure, in `<out>/scaling/`.

Every run is one papermill execution of `nbs/run_method.ipynb` for one seed, written to `<out>/<run>.ipynb`
next to the run directory `<out>/<run>/` (the report renders each as a page). A finished run (metrics.json) is skipped; a killed one resumes from its
last checkpoint. `--tokens` sets the members' budget; a budget other than the preset's goes to its own folder
(`reports/study2-<N/1000>k`) under the name a preset run would have, so run names never mix budgets.
"""
import argparse, json, math, subprocess, sys, time
from pathlib import Path

from ens_distill.core import EnsDistillError, get_config, project_path
from ens_distill.runs import atomic_write, is_finished, run_name, run_path

REFS = [('teacher', dict(K=1)), ('bigram', dict(K=1)), ('unigram', dict(K=1))]
PAIR = [('independent', {}), ('single_large', {})]
CONTROLS = [('single_matched', {}), ('single', {})]
METHODS = [('bagging', {}), ('cbtm', dict(routing='uniform')), ('cbtm', dict(routing='tfidf')), ('cbtm', dict(routing='learned')),
           ('boosting', dict(boost_mode='topq', boost_q=0.1)), ('boosting', dict(boost_mode='topq', boost_q=0.25)),
           ('boosting', dict(boost_mode='weighted')), ('independent', dict(prune_layers='offset')), ('ncl', dict(ncl_lambda=0., prune_layers='offset')),
           ('independent', dict(prune_layers='importance_offset')),   # NCL's reference: members that start different, each near the importance cut
           *[('ncl', dict(ncl_lambda=lam, prune_layers='importance_offset')) for lam in (0., .5, 1.)],
           ('raw', dict(K=1)), ('synthetic', {}), ('synthetic', dict(synthetic_frac=.5)),
           ('teacher_ft', dict(K=1))]   # the two that spend teacher compute last
OBJECTIVES = [dict(objective='rkl'), dict(objective='jsd'), dict(objective='skl')]   # for the best ensemble and `single` (`objective_runs`)
STAGES = dict(refs=REFS, pair=PAIR, controls=CONTROLS, methods=METHODS, objectives=None)
SCALE_K = [1, 2, 4, 8]
SCALE_SIZES = dict(study=['p2f672g2', 'p4f672g2', 'p8f672g2', 'p16f672g2'])   # other presets: ['tiny', 'xs'] (seconds, for checks)
ISO_K = [1, 2, 8]   # the iso-FLOP slice (K=4 at the members' tokens is the grid's, and the pair's, run)
STEPS = ['grid', 'scaling', 'predict', 'heldout', 'fit', 'summary']
SCHEDULES = [('single', dict(alpha_schedule='ramp_kd_ce')), ('single', dict(alpha_schedule='ramp_ce_kd'))]
ONE_SEED = {'refs'}
NB_PARAMS = {'K', 'size', 'objective', 'alpha', 'tau', 'routing'}  # run_method.ipynb's own parameters (the rest go in `extra`)


def out_dir(tokens:int, preset:str='study')->str:
    base = get_config(preset)
    return base.out_dir if tokens == base.tokens_per_member else f'{base.out_dir}-{tokens // 1000}k'


def run_config(method:str, seed:int, tokens:int, extra:dict, preset:str='study'):
    "The settings of one run and seed (the name a preset run would have, in the budget's own folder)."
    base = get_config(preset, method=method, seed=seed, seeds=[seed], **extra)
    if tokens != base.tokens_per_member: extra = dict(extra, run_name=run_name(base))   # the folder spells the budget, not the name
    return get_config(preset, method=method, seed=seed, seeds=[seed], tokens_per_member=tokens, out_dir=out_dir(tokens, preset), **extra)


def run_one(method:str, seed:int, tokens:int, extra:dict, preset:str='study'):
    cfg = run_config(method, seed, tokens, extra, preset); extra = dict(extra, run_name=cfg.run_name) if cfg.run_name else extra
    path = run_path(cfg)
    if is_finished(path): print(f'== {path}: finished, skipped', flush=True); return
    nb = path.parent/f'{path.name}.ipynb'; nb.parent.mkdir(parents=True, exist_ok=True)
    resume = (path/'metrics.csv').exists()
    print(f"== {path}{' (resuming)' if resume else ''} {time.strftime('%T')}", flush=True); t = time.time()
    cmd = [sys.executable, '-m', 'papermill', 'nbs/run_method.ipynb', str(nb), '-k', 'python3', '--log-level', 'WARNING',
           '-p', 'preset', preset, '-p', 'method', method, '-p', 'seeds', f'[{seed}]', '-p', 'tokens_per_member', str(tokens),
           '-p', 'out_dir', cfg.out_dir, '-p', 'overwrite', 'False', '-p', 'resume', str(resume)]
    for k, v in extra.items():
        if k in NB_PARAMS: cmd += ['-p', k, str(v)]
    rest = {k: v for k, v in extra.items() if k not in NB_PARAMS}
    if rest: cmd += ['-y', 'extra: ' + json.dumps(rest)]
    subprocess.run(cmd, check=True)
    print(f'   done in {time.time() - t:.0f} s', flush=True)


def best_ensemble(tokens:int, preset:str)->tuple:
    "(method, settings) of the K-member ensemble with the lowest seed-0 test perplexity among the pair's and `methods`' runs; chosen once, kept in best_ensemble.json."
    f = project_path(out_dir(tokens, preset))/'best_ensemble.json'
    if f.exists(): b = json.loads(f.read_text()); return b['method'], b['settings']
    from ens_distill.methods import method_names
    cands = [(m, x) for m, x in PAIR + METHODS if m in method_names(ensemble=True) and x.get('K', 2) > 1]
    paths = {i: run_path(run_config(m, 0, tokens, x, preset)) for i, (m, x) in enumerate(cands)}
    if missing := [p.name for p in paths.values() if not is_finished(p)]:
        raise EnsDistillError(f"best ensemble: {len(missing)} method run(s) of seed 0 unfinished ({', '.join(missing[:3])}...); run the methods stage first")
    ppl = {i: json.loads((p/'metrics.json').read_text())['test_ppl'] for i, p in paths.items()}
    i = min(ppl, key=ppl.get); m, x = cands[i]
    atomic_write(f, dict(method=m, settings=x, run=paths[i].name, test_ppl=ppl[i], candidates={paths[j].name: v for j, v in ppl.items()},
                         chosen_by='seed-0 test perplexity', made_at=time.strftime('%Y-%m-%d %H:%M:%S'), commit=_commit()))
    print(f'== best ensemble: {paths[i].name} ({ppl[i]:.2f})', flush=True)
    return m, x


def objective_runs(tokens:int, preset:str)->list:
    "The objectives stage: reverse KL, JSD and skew KL for the best ensemble and for `single`."
    m, x = best_ensemble(tokens, preset)
    return [(m, {**x, **o}) for o in OBJECTIVES] + [('single', o) for o in OBJECTIVES]


def scale_sizes(preset:str)->list: return SCALE_SIZES.get(preset, ['tiny', 'xs'])
def held_out(preset:str)->tuple: return (SCALE_K[-1], scale_sizes(preset)[-1])   # the costliest corner: an extrapolation in K and N


def grid_points(preset:str)->list:
    "(K, size) of the scaling grid without the held-out point, cheapest first (cost ~ K x (N + head))."
    order = {s: i for i, s in enumerate(scale_sizes(preset))}
    pts = [(K, sz) for sz in scale_sizes(preset) for K in SCALE_K if (K, sz) != held_out(preset)]
    return sorted(pts, key=lambda p: (p[0] * (order[p[1]] + 4), p[0]))


def iso_points(tokens:int, preset:str)->list:
    "(K, tokens per member) of the iso-FLOP slice: the K=4 ensemble's 4 x `tokens` split over K members."
    return [(K, 4 * tokens // K) for K in ISO_K] + [(4, tokens)]


def scale_run(K:int, size:str, seed:int, tokens:int, preset:str)->Path:
    return run_path(run_config('independent', seed, tokens, dict(K=K, size=size), preset))


def scaling_tables(tokens:int, seeds:list, preset:str)->dict:
    "The finished runs of the grid (held-out point included when done) and of the iso-FLOP slice, as sweep tables."
    from ens_distill.scaling import read_run
    import pandas as pd
    size = get_config(preset).size
    runs = dict(per_member=[(scale_run(K, sz, s, tokens, preset), tokens) for K, sz in grid_points(preset) + [held_out(preset)] for s in seeds],
                total_flops=[(scale_run(K, size, s, t, preset), 4 * tokens) for K, t in iso_points(tokens, preset) for s in seeds])
    out = {}
    for mode, rs in runs.items():
        rows = [dict(read_run(p), budget=b, budget_mode=mode) for p, b in rs if is_finished(p)]
        out[mode] = pd.DataFrame(rows)
    return out


def predict(tokens:int, seeds:list, preset:str, n_boot:int=500)->dict:
    "Fit both L(K, N) forms to the grid without the held-out point; write its predicted test CE once (never overwritten)."
    from ens_distill.scaling import LAWS, compare_laws, fit_law
    f = project_path(out_dir(tokens, preset))/'scaling'/'prediction.json'
    if f.exists(): print(f'== {f}: the prediction exists, kept'); return json.loads(f.read_text())
    t = scaling_tables(tokens, seeds, preset)['per_member']
    K0, sz0 = held_out(preset)
    if len(t) < len(grid_points(preset)) * len(seeds): raise EnsDistillError(f"predict: {len(t)} of {len(grid_points(preset)) * len(seeds)} grid runs finished; run the scaling stage first")
    if not (t['size'] == sz0).any(): raise EnsDistillError(f"predict: no grid run of size {sz0} finished; run the scaling stage first")
    N0 = float(t[t['size'] == sz0].N.iloc[0])   # the held-out size's parameters, from its runs at smaller K
    cmp = compare_laws(t.K, t.N, t.test_ce)
    pred = {}
    for kind in LAWS:
        fit = fit_law(kind, t.K, t.N, t.test_ce, n_boot=n_boot)
        lo, hi = fit.band(K0, N0)
        pred[kind] = dict(test_ce=float(fit(K0, N0)), ci95=[float(lo), float(hi)], test_ppl=math.exp(float(fit(K0, N0))), params=fit.params,
                          holdout_rmse_on_grid=float(cmp.loc[kind, 'holdout_rmse']))
    rec = dict(point=dict(K=K0, size=sz0, N=N0, tokens_per_member=tokens), seeds=seeds, fitted_on=len(t), predictions=pred,
               primary=min(pred, key=lambda k: pred[k]['holdout_rmse_on_grid']),   # the form with the smaller held-out error on the grid
               made_at=time.strftime('%Y-%m-%d %H:%M:%S'), commit=_commit())
    atomic_write(f, rec); print(f'== prediction for K={K0} {sz0}: ' + ', '.join(f"{k} {v['test_ce']:.4f} nats" for k, v in pred.items()))
    return rec


def _commit()->str:
    r = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=project_path('.'))
    return r.stdout.strip()


def fit(tokens:int, seeds:list, preset:str, n_boot:int=500)->dict:
    "Sweep tables, both forms with bootstrap and profile-likelihood CIs, held-out errors, the prediction's error, the figure."
    from ens_distill.scaling import LAWS, compare_laws, fit_law, fit_law_k, profile_ci, scaling_figure
    root = project_path(out_dir(tokens, preset)); d = root/'scaling'; d.mkdir(parents=True, exist_ok=True)
    tabs = scaling_tables(tokens, seeds, preset); (root/'sweeps').mkdir(exist_ok=True)
    for mode, t in tabs.items(): atomic_write(root/'sweeps'/f'independent-{mode}.csv', t.to_csv(index=False))
    t = tabs['per_member']
    if len(t) < 6: raise EnsDistillError(f"fit: {len(t)} grid runs finished; run the scaling stage first")
    cmp = compare_laws(t.K, t.N, t.test_ce)
    laws, fits = {}, {}
    for kind, (_, names) in LAWS.items():
        f = fits[kind] = fit_law(kind, t.K, t.N, t.test_ce, n_boot=n_boot); ci = f.ci()
        laws[kind] = dict(params=f.params, rmse=f.rmse, n=f.n, bootstrap_ci95={k: list(ci[k]) for k in names},
                          profile_ci95={k: list(profile_ci(kind, t.K, t.N, t.test_ce, k)) for k in names if k not in ('E', 'A', 'B')},
                          holdout_rmse=float(cmp.loc[kind, 'holdout_rmse']), holdout_max=float(cmp.loc[kind, 'holdout_max']))
    per_size = {sz: fit_law_k(g.K, g.test_ce, n_boot=n_boot).params for sz, g in t.groupby('size') if g.K.nunique() >= 3}
    out = dict(laws=laws, per_size_K_law=per_size, points=len(t), seeds=seeds, tokens_per_member=tokens)
    pf = d/'prediction.json'
    K0, sz0 = held_out(preset); h = t[(t.K == K0) & (t['size'] == sz0)]
    if pf.exists() and len(h):
        pr = json.loads(pf.read_text()); obs = float(h.test_ce.mean())
        out['prediction'] = dict(point=pr['point'], observed_ce=obs, made_at=pr['made_at'], primary=pr['primary'],
                                 **{k: dict(predicted_ce=v['test_ce'], ci95=v['ci95'], error=v['test_ce'] - obs,
                                            inside_ci=v['ci95'][0] <= obs <= v['ci95'][1]) for k, v in pr['predictions'].items()})
    iso = tabs['total_flops']
    if len(iso): out['iso_flops'] = iso[['K', 'tokens_per_member', 'test_ce', 'test_ppl', 'train_flops']].sort_values('K').to_dict('records')
    atomic_write(d/'fit.json', out)
    fig = scaling_figure(t, dict(KN=fits['KN']), title=f'independent: K x member size at {tokens // 1000}k tokens per member')
    fig.savefig(d/'scaling.png', dpi=110); print(f'== {d}/fit.json, scaling.png')
    return out


def grid(seed:int, tokens:int, preset:str, method:str='single'):
    "alpha x tau for `method` on dev perplexity (finished points reused), the alpha schedules, the chosen pair on the best ensemble."
    out = out_dir(tokens, preset); size = get_config(preset).size
    res = project_path(out)/f'grid-{method}-K{get_config(preset).K}-{size}.json'
    nb = project_path(out)/f'grid-{method}-s{seed}.ipynb'; nb.parent.mkdir(parents=True, exist_ok=True)
    if not res.exists():   # one grid per budget folder (its file names no seed): later seeds reuse the choice
        print(f"== {nb} {time.strftime('%T')}", flush=True)
        subprocess.run([sys.executable, '-m', 'papermill', 'nbs/run_grid.ipynb', str(nb), '-k', 'python3', '--log-level', 'WARNING',
                        '-p', 'preset', preset, '-p', 'method', method, '-p', 'seed', str(seed), '-p', 'out_dir', out, '-p', 'record', 'False',
                        '-p', 'name_budget', 'True', '-y', 'extra: ' + json.dumps(dict(tokens_per_member=tokens))], check=True)
    for m, extra in SCHEDULES: run_one(m, seed, tokens, extra, preset)
    choice = json.loads(res.read_text()); a, t = choice['alpha'], choice['tau']
    print(f'== chosen on dev perplexity: alpha {a:g}, tau {t:g}', flush=True)
    m, x = best_ensemble(tokens, preset)
    if (a, t) != (1., 1.): run_one(m, seed, tokens, dict(x, alpha=a, tau=t), preset)   # the chosen pair, as a pair, on the best ensemble


def _fmt(v, d=3)->str: return 'n/a' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{d}g}'


def summary(tokens:int, preset:str)->list:
    "Every entry of the budget's folder against `independent` (test CE with paired CIs) and its task accuracies: comparisons.md/.json."
    from ens_distill.report import _keys, collect_runs, paired_ce, rule_cis, seed_noise
    from ens_distill.runs import entry_name
    from ens_distill.stats import verdict
    from ens_distill.lmeval import HEADLINE_TASKS, task_items, task_summary
    root = project_path(out_dir(tokens, preset)); cfg = get_config(preset)
    df = collect_runs(root)
    if df.empty: raise EnsDistillError(f"summary: no finished runs under {root}")
    df = df[[Path(p).parent == root for p in df.path]].assign(entry=lambda d: d.run.map(entry_name))
    ref = f'independent-K{cfg.K}-{cfg.size}'
    key = lambda g: {k: g.iloc[0][k] for k in _keys(df)}                       # the entry as `report.paired_ce` selects it
    ref_key = key(df[df.entry == ref]) if (df.entry == ref).any() else None
    noise = seed_noise(df)                                                      # the training noise one seed leaves out
    rows = []
    for e, g in df.groupby('entry'):
        row = dict(entry=e, seeds=sorted(int(s) for s in g.seed), test_ppl=float(g.test_ppl.mean()), test_ppl_sd=float(g.test_ppl.std(ddof=1)) if len(g) > 1 else 0.,
                   in_domain_ppl=float(g.in_domain_ppl.mean()) if 'in_domain_ppl' in g else None,
                   train_flops=float(g.train_flops.mean()), overhead_flops=float(g.overhead_flops.fillna(0).mean()) if 'overhead_flops' in g else 0.,
                   inference_flops_per_token=float(g.get('inference_flops_per_token', g.train_flops * 0).mean()),
                   train_s=float(g.train_seconds.mean()) if 'train_seconds' in g else None)
        r = paired_ce(df, key(g), ref_key) if e != ref and ref_key else None     # one seed: its verdict must clear the seed spread
        if r: row.update(vs_independent=dict(diff=r['diff'], lo=r['lo'], hi=r['hi'], seeds=r['seeds'], docs=r['n_groups'], verdict=r['verdict'],
                                             ci_verdict=verdict(r, 'lower'), seed_noise=noise))
        items = [task_items(p) for p in g.path]
        tasks = {}
        for t in HEADLINE_TASKS:
            recs = [i[t] for i in items if t in i]
            if recs: ts = task_summary(recs); tasks[t] = dict(acc=ts['acc'], lo=ts['acc_lo'], hi=ts['acc_hi'], n=ts['n'], seeds=len(recs))
        if tasks: row['tasks'] = tasks
        rows.append(row)
    rows.sort(key=lambda r: r['test_ppl'])
    atomic_write(root/'comparisons.json', rows)
    md = [f'# {root.name}: every entry against `{ref}`', '', 'Regenerate: `python scripts/study2.py summary --tokens {}`. CE difference: entry - {}, nats/token, 95% CI from a paired bootstrap over test documents and the seeds both have; verdict for "the entry is better". The bootstrap covers test documents, not training noise: with one shared seed a difference counts only when its whole CI clears the largest seed-to-seed spread of one recipe in this folder ({:.4f} nats), else it reads inconclusive. Train FLOPs: the members\' training steps; other FLOPs: training-time work besides them (boosting\'s block scoring, synthetic generation and its cache, the learned router), teacher top-k cache excluded.'.format(tokens, ref, noise), '',
          '| entry | seeds | test ppl | training domains | train FLOPs | other FLOPs | inference FLOPs/token | train s | CE diff vs independent [95% CI] | verdict |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        v = r.get('vs_independent')
        ci = f"{v['diff']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}] ({len(v['seeds'])} seed(s), {v['docs']} docs)" if v else ('reference' if r['entry'] == ref else 'n/a (no shared per-block data)')
        sd = f" ± {r['test_ppl_sd']:.2f}" if len(r['seeds']) > 1 else ''
        md.append(f"| {r['entry']} | {','.join(map(str, r['seeds']))} | {r['test_ppl']:.2f}{sd} | {_fmt(r['in_domain_ppl'], 4)} | {_fmt(r['train_flops'])} | {_fmt(r['overhead_flops']) if r['overhead_flops'] else ''} | "
                  f"{_fmt(r['inference_flops_per_token'])} | {_fmt(r['train_s'], 3)} | {ci} | {v['verdict'] if v else ''} |")
    scored = [r for r in rows if r.get('tasks')]
    if scored:
        md += ['', '## Headline tasks (accuracy, 95% bootstrap CI over items)', '', '| entry | ' + ' | '.join(HEADLINE_TASKS) + ' |', '|---|' + '---|' * len(HEADLINE_TASKS)]
        for r in scored:
            md.append(f"| {r['entry']} | " + ' | '.join(f"{r['tasks'][t]['acc']:.3f} [{r['tasks'][t]['lo']:.3f}, {r['tasks'][t]['hi']:.3f}]" if t in r['tasks'] else 'n/a (not scored)'
                                                  for t in HEADLINE_TASKS) + ' |')
    rc = rule_cis(df)
    if len(rc):
        md += ['', '## Combination rules (CE difference against the probability mean of the same members, 95% CI over documents and seeds)', '',
               '| entry | seeds | rule | test ppl | CE diff vs mean [95% CI] | verdict |', '|---|---|---|---|---|---|']
        md += [f"| {r.entry} | {r.seeds} | {r.rule} | {r.test_ppl:.2f} | " + ('reference' if r.rule == 'mean' else f'{r.diff_vs_mean:+.4f} [{r.lo:+.4f}, {r.hi:+.4f}]')
               + f" | {'' if r.rule == 'mean' else r.verdict} |" for r in rc.itertuples()]
    atomic_write(root/'comparisons.md', '\n'.join(md) + '\n'); print(f'== {root}/comparisons.md: {len(rows)} entries')
    return rows


def run_step(step:str, seeds:list, tokens:int, preset:str):
    "The grid and scaling stages (see the module docstring)."
    if step == 'grid':
        for s in seeds: grid(s, tokens, preset)
    elif step == 'scaling':
        for s in seeds:
            for K, sz in grid_points(preset): run_one('independent', s, tokens, dict(K=K, size=sz), preset)
            for K, t in iso_points(tokens, preset)[:-1]: run_one('independent', s, t, dict(K=K), preset)
    elif step == 'predict': predict(tokens, seeds, preset)
    elif step == 'heldout':
        if not (project_path(out_dir(tokens, preset))/'scaling'/'prediction.json').exists():
            raise EnsDistillError("heldout: no prediction.json yet; run the `predict` stage first (the point is predicted before it runs)")
        K0, sz0 = held_out(preset)
        for s in seeds: run_one('independent', s, tokens, dict(K=K0, size=sz0), preset)
    elif step == 'summary': summary(tokens, preset)
    else: fit(tokens, seeds, preset)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('stages', nargs='*', default=['refs', 'pair', 'controls'], choices=list(STAGES) + STEPS)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--tokens', type=int, default=0, help="tokens per member (0: the preset's)")
    p.add_argument('--preset', default='study', help='`smoke` checks the script in seconds')
    a = p.parse_args()
    from ens_distill.core import one_line_errors; one_line_errors()   # bad input: one line that says what to fix
    tokens = a.tokens or get_config(a.preset).tokens_per_member
    for stage in a.stages:
        if stage in STEPS: run_step(stage, a.seeds, tokens, a.preset); continue
        for seed in a.seeds[:1] if stage in ONE_SEED else a.seeds:
            for method, extra in objective_runs(tokens, a.preset) if stage == 'objectives' else STAGES[stage]: run_one(method, seed, tokens, extra, a.preset)
