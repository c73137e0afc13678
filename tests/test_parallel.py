"Member-parallel runs on CPU with gloo and 2 processes (torchrun) equal the single-process packed runs."
import json, math, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from ens_distill.core import get_config, EnsDistillError
from ens_distill.runs import run_name
from ens_distill.methods import method_names
from ens_distill.pipeline import run_method, run_parallel
from ens_distill.packed import PackedEnsemble, generate, load_members
from ens_distill.eval import evaluate
from ens_distill.parallel import member_split

ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
           TOKENIZERS_PARALLELISM='false')

def torchrun(*args, n=2):
    "Run `args` under torchrun with n CPU processes (gloo); fail with its output."
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', *map(str, args)],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def max_member_diff(a, b, K):
    "Largest absolute weight difference between the members saved in two run dirs."
    out = 0.
    for k in range(K):
        sa, sb = (load_file(str(Path(d)/'members'/f'member_{k}'/'model.safetensors')) for d in (a, b))
        out = max(out, max(float((sa[n] - sb[n]).abs().max()) for n in sa))
    return out

@pytest.fixture(scope='module')
def cache(tmp_path_factory): return str(tmp_path_factory.mktemp('cache'))

def smoke(out, cache, **kw): return get_config('smoke', out_dir=str(out), cache_dir=cache, dtype='fp32', **kw)

def test_member_split():
    assert member_split(5, 2) == [(0, 3), (3, 5)]
    assert member_split(7, 3) == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(EnsDistillError, match='at most K'): member_split(2, 4)
    assert set(method_names(parallel=True)) == {'independent', 'bagging', 'cbtm', 'ncl', 'boosting'}
    with pytest.raises(EnsDistillError, match='not member-parallel'): run_parallel(get_config('smoke', method='single'))

CRASH = textwrap.dedent('''
    import os, sys
    import ens_distill.train as tr
    from ens_distill.core import get_config
    from ens_distill.pipeline import run_parallel
    out, cache = sys.argv[1], sys.argv[2]
    if os.environ['RANK'] == '1':                               # rank 1 dies (no cleanup) in step 9
        ok = tr.check_finite
        tr.check_finite = lambda loss, step: os._exit(3) if step > 8 else ok(loss, step)
    run_parallel(get_config('smoke', method='independent', ckpt_every=4, dtype='fp32', out_dir=out, cache_dir=cache),
                 progress=False, verbose=False)
''')

def test_independent_cli_resumes_killed_rank_and_equals_single_process(tmp_path, cache):
    "2 ranks, rank 1 killed after its step-8 checkpoint; `torchrun -m ens_distill.parallel --resume` then gives run_method's members and perplexity."
    cfg = smoke(tmp_path/'single', cache, method='independent')
    single = run_method(cfg, progress=False, verbose=False)
    (tmp_path/'crash.py').write_text(CRASH)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', tmp_path/'crash.py',
                        tmp_path/'par', cache], env=ENV, capture_output=True, text=True, timeout=300)
    run = tmp_path/'par'/run_name(cfg)
    assert r.returncode != 0 and not (run/'metrics.json').exists()
    assert (run/'ranks'/'rank1'/'ckpt'/'model.safetensors').exists()
    torchrun('-m', 'ens_distill.parallel', '--preset', 'smoke', '--method', 'independent', '--dtype', 'fp32',
             '--out_dir', tmp_path/'par', '--cache_dir', cache, '--quiet', '--resume')
    m = json.loads((run/'metrics.json').read_text())
    err = max_member_diff(tmp_path/'single'/run_name(cfg), run, 2)
    print(f'independent (rank 1 killed, resumed): max member weight diff {err:.2e}')
    assert err <= 1e-6
    assert m['parallel']['world'] == 2 and m['parallel']['members'] == [[0, 1], [1, 2]]
    assert 'ncl' not in m['parallel']['comm']['0']                               # independent members never talk
    assert m['parallel']['comm']['0']['ppl']['bytes_per_token'] == 4.            # one member's log-prob per token
    assert abs(m['test_ppl'] - single['test_ppl']) <= 1e-6 * single['test_ppl']
    assert abs(m['parallel']['parallel_test_ppl'] - single['test_ppl']) <= 1e-5 * single['test_ppl']
    assert m['K'] == 2 and len(list((run/'members').glob('member_*'))) == 2 and (run/'eval.json').exists()
    rows = (run/'metrics.csv').read_text().splitlines()
    steps = [int(float(r.split(',')[0])) for r in rows[1:]]
    assert 'loss_m1' in rows[0] and steps == sorted(set(steps)) and len(steps) > 2   # each step logged once

WORKER = textwrap.dedent('''
    import json, sys, torch
    from dataclasses import replace
    from ens_distill.core import get_config
    from ens_distill.runs import run_name
    from ens_distill.pipeline import run_parallel
    from ens_distill.packed import PackedEnsemble, load_members, shard_members
    from ens_distill.parallel import *
    out, cache = sys.argv[1], sys.argv[2]
    cfg = get_config('smoke', method='ncl', K=3, ncl_lambda=1.0, dtype='fp32', out_dir=out + '/par', cache_dir=cache)
    run_parallel(cfg, progress=False, verbose=False)
    comm = Comm(); comm.barrier()                                   # rank 0 has saved the gathered members
    ens = load_members(out + '/par/' + run_name(cfg) + '/members').eval()
    split = member_split(3, comm.world); k0, k1 = split[comm.rank]; sizes = [b - a for a, b in split]
    part = shard_members(ens, k0, k1).eval()
    g = torch.Generator().manual_seed(0)
    q = torch.rand(3, 5, 9, generator=g)
    mean_err = float((ncl_mean_fn(comm, 3)(q[k0:k1]) - q.mean(0)).abs().max())
    V = ens.config.vocab_size
    x, w = torch.randint(0, V, (6, 16), generator=g), torch.rand(3, 6, generator=g)
    ppl, ppl_w = parallel_perplexity(part, x, comm, sizes, batch_size=4), parallel_perplexity(part, x, comm, sizes, w, batch_size=4)
    gen = parallel_generate(part, x[:2, :5], comm, 3, max_new_tokens=8)
    if comm.rank == 0:
        json.dump(dict(mean_err=mean_err, ppl=ppl, ppl_w=ppl_w, gen=gen.tolist(), comm=comm.report()), open(out + '/worker.json', 'w'))
    run_parallel(replace(cfg, method='boosting'), progress=False, verbose=False)  # round r on rank r % 2
    torch.distributed.destroy_process_group()
''')

def test_ncl_boosting_ppl_generate_equal_single_process(tmp_path, cache):
    "NCL and boosting with K=3 on 2 ranks: same members as one process; so are perplexity and greedy generation."
    cn, cb = smoke(tmp_path/'single', cache, method='ncl', K=3, ncl_lambda=1.0), smoke(tmp_path/'single', cache, method='boosting', K=3, ncl_lambda=1.0)
    single, boost = run_method(cn, progress=False, verbose=False), run_method(cb, progress=False, verbose=False)
    (tmp_path/'worker.py').write_text(WORKER)
    torchrun(tmp_path/'worker.py', tmp_path, cache)
    run = tmp_path/'par'/run_name(cn)
    err = max_member_diff(tmp_path/'single'/run_name(cn), run, 3)
    m, r = json.loads((run/'metrics.json').read_text()), json.loads((tmp_path/'worker.json').read_text())
    print(f"ncl: max member weight diff {err:.2e}, ncl mean err {r['mean_err']:.2e}, comm {r['comm']}")
    assert err <= 1e-6 and r['mean_err'] <= 1e-7
    assert m['parallel']['comm']['0']['ncl']['bytes_per_token'] == m['parallel']['bytes_per_token']['train'] == 4 * (8 + 1)
    assert abs(m['test_ppl'] - single['test_ppl']) <= 1e-6 * single['test_ppl']
    ens = load_members(run/'members').eval()
    g = torch.Generator().manual_seed(0); torch.rand(3, 5, 9, generator=g)
    x, w = torch.randint(0, ens.config.vocab_size, (6, 16), generator=g), torch.rand(3, 6, generator=g)
    ev = evaluate(ens, x, rules=('mean', 'weighted'), router_weights=w, batch_size=4)['ensemble']
    assert abs(r['ppl']['ppl'] - ev['mean']['overall']['ppl']) <= 1e-5 * r['ppl']['ppl']
    assert abs(r['ppl_w']['ppl'] - ev['weighted']['overall']['ppl']) <= 1e-5 * r['ppl_w']['ppl']
    assert r['gen'] == generate(ens, x[:2, :5], 8).tolist()
    assert r['comm']['generate']['bytes_per_token'] == 4 * ens.config.vocab_size + 8
    berr = max_member_diff(tmp_path/'single'/run_name(cb), tmp_path/'par'/run_name(cb), 3)
    mb = json.loads((tmp_path/'par'/run_name(cb)/'metrics.json').read_text())
    print(f'boosting: max member weight diff {berr:.2e}')
    assert berr <= 1e-6 and abs(mb['test_ppl'] - boost['test_ppl']) <= 1e-6 * boost['test_ppl']
    assert mb['steps'] == boost['steps'] and mb['train_flops'] == boost['train_flops']
    assert mb['parallel']['comm']['0']['boost_scores']['bytes'] > 0

def test_ncl_cli_writes_the_members_of_run_method(tmp_path, cache):
    "`python -m ens_distill.parallel --method ncl` under torchrun (2 ranks) writes run_method's members and metrics."
    cfg = smoke(tmp_path/'single', cache, method='ncl')
    single = run_method(cfg, progress=False, verbose=False)
    torchrun('-m', 'ens_distill.parallel', '--preset', 'smoke', '--method', 'ncl', '--dtype', 'fp32',
             '--out_dir', tmp_path/'par', '--cache_dir', cache, '--quiet')
    run = tmp_path/'par'/run_name(cfg)
    err = max_member_diff(tmp_path/'single'/run_name(cfg), run, 2)
    m = json.loads((run/'metrics.json').read_text())
    print(f'ncl CLI: max member weight diff {err:.2e}')
    assert err <= 1e-6 and m['parallel']['world'] == 2
    assert abs(m['test_ppl'] - single['test_ppl']) <= 1e-6 * single['test_ppl']
    assert (m['steps'], m['train_flops'], m['tokens_per_member']) == (single['steps'], single['train_flops'], single['tokens_per_member'])
