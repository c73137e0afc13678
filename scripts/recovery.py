"""Recovery curves of members pruned from the teacher (issue #15), on the `study` preset's corpus.

usage: python scripts/recovery.py [STAGE ...]     stages: cuts refs long sizes table (default: all, in that order)

- cuts:  depth, width and mixed cuts of about the same non-embedding parameters as `p4` (14.2M), and `p4` with
         importance-ranked layers or a frozen shared head, each trained as one `single` student for 200k tokens;
- long:  `p4` with importance-ranked layers (better than evenly spaced ones in `cuts`) for 2M tokens: the budget
         question and the issue's p4 goal;
- sizes: `p2` and `p8` (importance-ranked) for 500k tokens (with `p4` from `long`: the sizes' curves);
- refs:  the frozen teacher and the unigram and bigram floors on the study's test split (reports/study2);
- table: teacher and bigram on the same dev blocks, then `reports/recovery/recovery.{csv,md,png}`;
- compare: test perplexity ratios of the cuts on the training domains, with 95% CIs from a paired bootstrap over test
         documents (`stats.paired_bootstrap`): `reports/recovery/comparisons.md`.

Every run is an ordinary `run_method` run (dev perplexity logged at the `dev_curve` points, then the full test
evaluation) under `reports/recovery/<stage>-<variant>-s0/`; a finished run is skipped, a killed one resumes
from its last checkpoint. The dev curve is measured inside one cosine schedule per run: points before the end
are at a higher learning rate than a run annealed to that budget would be.
"""
import json, math, sys, time
from pathlib import Path
import numpy as np, pandas as pd
import torch

from ens_distill.core import *
from ens_distill.runs import RunDir, atomic_write, is_finished, run_path
from ens_distill.pipeline import run_method, prepare_run, dev_blocks
from ens_distill.methods import Context, CountLM, count_nll, pack_teacher
from ens_distill.eval import token_stats
from ens_distill.prune import member_config
from ens_distill.compute import non_embedding_params

OUT = Path('reports/recovery')
CUTS = {  # variant: overrides (all about 14M non-embedding parameters, like p4); layers ranked by importance unless named
    'p4': dict(size='p4', prune_layers='even'),
    'p4-importance': dict(size='p4', prune_layers='importance'),
    'p4-frozen-head': dict(size='p4', prune_layers='importance', share_embedding=True),
    'p8f672g2': dict(size='p8f672g2', prune_layers='importance'),
    'p12f512g1': dict(size='p12f512g1', prune_layers='importance'),
    'p30f96g1': dict(size='p30f96g1'),
}
STAGES = dict(
    cuts=(CUTS, 200_000, [2048, 25_000, 50_000, 100_000, 200_000]),
    long=({'p4-importance': dict(size='p4', prune_layers='importance')}, 2_000_000, [2048, 50_000, 100_000, 200_000, 400_000, 700_000, 1_000_000, 1_500_000, 2_000_000]),
    sizes=({'p2-importance': dict(size='p2', prune_layers='importance'), 'p8-importance': dict(size='p8', prune_layers='importance')}, 500_000, [2048, 25_000, 50_000, 100_000, 200_000, 500_000]),
)


def config(stage:str, name:str, over:dict, tokens:int, curve:list)->RunConfig:
    return get_config('study', method='single', K=1, seeds=[0], tokens_per_member=tokens, dev_curve=curve,
                      out_dir=str(OUT), run_name=f'{stage}-{name}-s0', **over)


def run_stage(stage:str):
    variants, tokens, curve = STAGES[stage]
    for name, over in variants.items():
        cfg = config(stage, name, over, tokens, curve)
        if is_finished(run_path(cfg)): print(f'== {cfg.run_name}: finished, skipped'); continue
        print(f'== {cfg.run_name}', flush=True); t = time.time()
        m = run_method(cfg, resume=(run_path(cfg)/'metrics.csv').exists(), progress=False)
        print(f"   test ppl {m['test_ppl']:.2f} in {time.time() - t:.0f} s", flush=True)


def run_refs():
    "The study's reference points on its test split: the frozen teacher and the count floors (reports/study2, seed 0)."
    for method in ('bigram', 'unigram', 'teacher'):
        cfg = get_config('study', method=method, K=1, seeds=[0])
        if is_finished(run_path(cfg)): print(f'== {run_path(cfg)}: finished, skipped'); continue
        m = run_method(cfg, progress=False)
        print(f"== {method}: test ppl {m['test_ppl']:.2f}, training domains {m.get('in_domain_ppl', float('nan')):.2f}", flush=True)


def references(cfg:RunConfig)->dict:
    "Teacher and bigram perplexity on the dev-curve blocks (the runs' own dev subset), cached in reference.json."
    f = OUT/'reference.json'
    if f.exists(): return json.loads(f.read_text())
    prep = prepare_run(cfg, progress=False, verbose=False)
    ctx = Context(cfg, prep['model'], prep['tokenizer'], prep['corpus'], prep['caches'], progress=False)
    x = ctx.corpus.tokens('dev'); x = x[dev_blocks(len(x), cfg.dev_curve_blocks)]
    st = token_stats(pack_teacher(ctx).eval(), x, rules=(), batch_size=cfg.eval_batch, amp=autocast_dtype(cfg.dtype, torch.device('cpu')),
                     skip=cfg.route_prefix)
    P = cfg.route_prefix
    ref = dict(teacher_dev_ppl=math.exp(st.get('member0', 'nll').mean().item()),
               bigram_dev_ppl=math.exp(float(count_nll(CountLM(ctx.tokens, ctx.vocab_size), x.numpy(), P, 2).mean())),
               dev_blocks=len(x), dev_tokens=int(x[:, P+1:].numel()))
    atomic_write(f, ref)
    return ref


def curves()->pd.DataFrame:
    rows = []
    for d in sorted(OUT.glob('*-s0')):
        if not is_finished(d): continue
        m, cfg = json.loads((d/'metrics.json').read_text()), from_yaml(d/'config.yaml')
        per_tok = m['train_flops'] / max(m['tokens_per_member'], 1)
        for r in RunDir(cfg, resume=True).rows():
            if r.get('dev_ppl_m0'):
                rows.append(dict(run=d.name, stage=d.name.split('-')[0], variant=d.name.split('-', 1)[1][:-3], size=cfg.size,
                                 nonemb_M=m.get('nonemb_params_per_member', 0) / 1e6, tokens=int(float(r['tokens'])),
                                 flops=per_tok * int(float(r['tokens'])), dev_ppl=float(r['dev_ppl_m0']),
                                 tokens_per_s=m['tokens_per_member'] / max(m['train_seconds'], 1e-9),
                                 test_ppl=m['test_ppl'], in_domain_ppl=m.get('in_domain_ppl', m['test_ppl'])))
    return pd.DataFrame(rows)


def table():
    cfg = config('cuts', 'p4', CUTS['p4'], *STAGES['cuts'][1:])
    ref, df = references(cfg), curves()
    if df.empty: print('no finished runs yet'); return
    df.to_csv(OUT/'recovery.csv', index=False)
    wide = df.pivot_table(index=['run', 'size', 'nonemb_M', 'tokens_per_s', 'in_domain_ppl'], columns='tokens', values='dev_ppl').reset_index()
    lines = [f"Dev perplexity ({ref['dev_tokens']:,} scored tokens of {ref['dev_blocks']} dev blocks, the same for every run) "
             f"after N training tokens; teacher {ref['teacher_dev_ppl']:.2f}, bigram {ref['bigram_dev_ppl']:.1f} on the same tokens. "
             "`in-domain test` is the finished run's test perplexity on the training domains.", '',
             '| run | size | non-emb params | tokens/s | ' + ' | '.join(f'{t/1e6:.3g}M' if t >= 1e6 else f'{t/1e3:.3g}k' for t in wide.columns[5:]) + ' | in-domain test |',
             '|---|---|---|---|' + '---|' * (len(wide.columns) - 5) + '---|']
    for _, r in wide.iterrows():
        cells = ['' if pd.isna(v) else f'{v:.1f}' if v < 1e6 else f'{v:.2g}' for v in r.values[5:]]
        lines.append(f"| {r['run']} | {r['size']} | {r['nonemb_M']:.2f}M | {r['tokens_per_s']:.0f} | " + ' | '.join(cells) + f" | {r['in_domain_ppl']:.1f} |")
    (OUT/'recovery.md').write_text('\n'.join(lines) + '\n')
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, x, lab in [(axs[0], 'tokens', 'training tokens'), (axs[1], 'flops', 'training FLOPs (compute module, head included)')]:
        for i, (run, g) in enumerate(df.groupby('run')): ax.plot(g[x], g.dev_ppl, 'o-' if i < 10 else 's--', ms=3, label=run)
        for k, ls in [('teacher_dev_ppl', '--'), ('bigram_dev_ppl', ':')]:
            ax.axhline(ref[k], color='k', ls=ls, lw=1, label=k.split('_')[0])
        ax.axhline(3 * ref['teacher_dev_ppl'], color='grey', ls='-.', lw=1, label='3 x teacher')
        ax.set(xscale='log', yscale='log', xlabel=lab, ylabel='dev perplexity (points above 3,000 are off the axis)', ylim=(10, 3000))
    axs[1].legend(fontsize=7, ncol=2); fig.suptitle('Recovery of members pruned from SmolLM2-135M (study corpus, one student each)')
    fig.tight_layout(); fig.savefig(OUT/'recovery.png', dpi=110)
    print('\n'.join(lines))


PAIRS = [('cuts-p4-importance-s0', 'cuts-p4-s0'), ('cuts-p8f672g2-s0', 'cuts-p4-importance-s0'), ('cuts-p12f512g1-s0', 'cuts-p4-importance-s0'),
         ('cuts-p30f96g1-s0', 'cuts-p4-importance-s0'), ('cuts-p4-frozen-head-s0', 'cuts-p4-importance-s0'),
         ('cuts-p12f512g1-s0', 'cuts-p8f672g2-s0'), ('cuts-p30f96g1-s0', 'cuts-p8f672g2-s0')]


def ratio_ci(a:Path, b:Path, holdout=('dialog',))->dict|None:
    "Test perplexity ratio a/b on the training domains with a 95% CI (paired bootstrap over test documents); None without per-block data."
    from ens_distill.report import _blocks
    from ens_distill.stats import paired_bootstrap, verdict
    ba, bb = _blocks(a), _blocks(b)
    if ba is None or bb is None: return None
    dom = [np.asarray(json.loads((p/'eval.json').read_text())['blocks']['domain']) for p in (a, b)]
    if not (np.array_equal(ba['n'], bb['n']) and np.array_equal(ba['doc'], bb['doc']) and np.array_equal(*dom)):
        raise EnsDistillError(f"{a.name} and {b.name} were scored on different test blocks; they cannot be paired")
    keep = ~np.isin(dom[0], list(holdout))
    r = paired_bootstrap(ba['nll'][keep], bb['nll'][keep], ba['n'][keep], ba['doc'][keep])
    return dict(ratio=math.exp(r['diff']), lo=math.exp(r['lo']), hi=math.exp(r['hi']), docs=r['n_groups'], verdict=verdict(r))


def compare():
    lines = ['Test perplexity ratio A / B on the training domains (one seed each), 95% CI from a paired bootstrap over test documents. '
             '`A better` is supported when the whole CI is below 1.', '', '| A | B | A / B | 95% CI | documents | A better? |', '|---|---|---|---|---|---|']
    for a, b in PAIRS:
        if not (is_finished(OUT/a) and is_finished(OUT/b)): continue
        r = ratio_ci(OUT/a, OUT/b)
        if r: lines.append(f"| {a[:-3]} | {b[:-3]} | {r['ratio']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {r['docs']} | {r['verdict']} |")
    (OUT/'comparisons.md').write_text('\n'.join(lines) + '\n'); print('\n'.join(lines))


if __name__ == '__main__':
    for s in sys.argv[1:] or ['cuts', 'refs', 'long', 'sizes', 'table', 'compare']:
        table() if s == 'table' else run_refs() if s == 'refs' else compare() if s == 'compare' else run_stage(s)
