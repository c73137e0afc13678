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
- objectives: reverse KL, JSD and skew KL for `independent` and `single` (forward KL is the pair's objective).

Every run is one papermill execution of `nbs/run_method.ipynb` for one seed, written to `<out>/<run>.ipynb`
next to the run directory `<out>/<run>/` (the report renders each as a page). A finished run (metrics.json) is skipped; a killed one resumes from its
last checkpoint. `--tokens` sets the members' budget; a budget other than the preset's goes to its own folder
(`reports/study2-<N/1000>k`) under the name a preset run would have, so run names never mix budgets.
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

from ens_distill.core import get_config
from ens_distill.runs import is_finished, run_name, run_path

REFS = [('teacher', dict(K=1)), ('bigram', dict(K=1)), ('unigram', dict(K=1))]
PAIR = [('independent', {}), ('single_large', {})]
CONTROLS = [('single_matched', {}), ('single', {})]
METHODS = [('bagging', {}), ('cbtm', dict(routing='uniform')), ('cbtm', dict(routing='tfidf')), ('cbtm', dict(routing='learned')),
           ('boosting', dict(boost_mode='topq', boost_q=0.1)), ('boosting', dict(boost_mode='topq', boost_q=0.25)),
           ('boosting', dict(boost_mode='weighted')), ('ncl', dict(ncl_lambda=0.)), ('ncl', dict(ncl_lambda=0.5)),
           ('ncl', dict(ncl_lambda=1.)), ('independent', dict(prune_layers='offset')), ('raw', dict(K=1)), ('synthetic', {}),
           ('teacher_ft', dict(K=1))]   # the two that spend teacher compute last
OBJECTIVES = [(m, o) for m in ('independent', 'single') for o in (dict(objective='rkl'), dict(objective='jsd'), dict(objective='skl'))]
STAGES = dict(refs=REFS, pair=PAIR, controls=CONTROLS, methods=METHODS, objectives=OBJECTIVES)
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


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('stages', nargs='*', default=['refs', 'pair', 'controls'], choices=list(STAGES))
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--tokens', type=int, default=0, help="tokens per member (0: the preset's)")
    p.add_argument('--preset', default='study', help='`smoke` checks the script in seconds')
    a = p.parse_args()
    tokens = a.tokens or get_config(a.preset).tokens_per_member
    for stage in a.stages:
        for seed in a.seeds[:1] if stage in ONE_SEED else a.seeds:
            for method, extra in STAGES[stage]: run_one(method, seed, tokens, extra, a.preset)
