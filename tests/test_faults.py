"Bad input gives one clear line naming what to fix, before any work (issue #18). More cases join as they are fixed."
import os, sys
from pathlib import Path
import pytest
from ens_distill.core import get_config, ConfigError, EnsDistillError
from ens_distill.teacher import tiny_tokenizer
from ens_distill.data import prepare_data

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
sys.path.insert(0, str(Path(__file__).parent))
from test_data import _cfg   # the two-domain synthetic corpus


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert '\n' not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize('over, words', [
    (dict(tokens_per_member=0), ["'tokens_per_member'", 'outside']),
    (dict(size='xs', block_size=4096), ["'block_size'", '2048']),
    (dict(size='xxl'), ["'size'", 'xxl']),
    (dict(share_embedding=True), ["'share_embedding'"]),
    (dict(dev_curve=[0]), ["'dev_curve'"]),
    (dict(large_size='huge'), ["'large_size'"]),
])
def test_config_errors(over, words):
    with pytest.raises(ConfigError) as e: get_config('smoke', **over)
    _one_line(e, *words)


def test_block_size_beyond_the_teachers_context(tmp_path):
    from ens_distill.pipeline import prepare_run
    from ens_distill.teacher import load_teacher
    n_ctx = load_teacher('tiny-random')[0].config.max_position_embeddings
    cfg = get_config('smoke', size='p1', block_size=n_ctx + 1, route_prefix=0, cache_dir=str(tmp_path/'cache'))
    with pytest.raises(ConfigError) as e: prepare_run(cfg, progress=False, verbose=False)
    _one_line(e, "'block_size'", 'context')
    assert not (tmp_path/'cache'/'data').exists()                    # nothing was built


def test_empty_domain_among_others(tmp_path):
    from dataclasses import replace
    from ens_distill.core import validate
    cfg = _cfg(tmp_path); spec = Path(cfg.corpus)
    (spec.parent/'tiny.txt').write_text('one two')
    spec.write_text(spec.read_text() + "tiny:\n  - path: tiny.txt\n")
    with pytest.raises(EnsDistillError) as e: prepare_data(validate(replace(cfg, domains=['animals', 'numbers', 'tiny'])), tiny_tokenizer())
    _one_line(e, "['tiny']", 'no train block')


def test_bad_yaml_config(tmp_path):
    from ens_distill.core import from_yaml
    (tmp_path/'c.yaml').write_text('lr: [0.1\nK: 2')
    with pytest.raises(ConfigError) as e: from_yaml(tmp_path/'c.yaml')
    _one_line(e, 'not valid YAML', 'c.yaml')


def test_damaged_cache_manifest(tmp_path):
    import torch
    from ens_distill.teacher import TopKCache, tiny_teacher
    tm, tok = tiny_teacher()
    toks = torch.randint(0, len(tok), (4, 8), generator=torch.Generator().manual_seed(0))
    TopKCache.build(tm, toks, tmp_path/'c', k=4, teacher_dtype='fp32', progress=False)
    man = tmp_path/'c'/'manifest.json'; man.write_text(man.read_text()[:40])      # truncated
    for f in (lambda: TopKCache(tmp_path/'c'), lambda: TopKCache.build(tm, toks, tmp_path/'c', k=4, teacher_dtype='fp32', progress=False)):
        with pytest.raises(EnsDistillError) as e: f()
        _one_line(e, 'manifest', 'damaged', 'delete')


def test_router_without_its_weights(tmp_path):
    import json
    from ens_distill.routing import Router
    (tmp_path/'r').mkdir(); (tmp_path/'r'/'route.json').write_text(json.dumps(dict(learned=True)))
    with pytest.raises(EnsDistillError) as e: Router.load(tmp_path/'r')
    _one_line(e, 'learned.safetensors')


@pytest.mark.parametrize('params, words', [(dict(lrr=0.1), ["['lrr']", 'extra']), (dict(extra=5), ["'extra' must map"]),
                                           (dict(size='xxl'), ["'size'", "'xxl'"])])
def test_notebook_parameters(tmp_path, params, words):
    import papermill as pm
    nb = Path(__file__).parents[1]/'nbs'/'run_method.ipynb'
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(nb), str(tmp_path/'o.ipynb'), kernel_name='python3', progress_bar=False,
                            parameters=dict(preset='smoke', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), **params))
    assert e.value.ename == 'ConfigError' and all(w in e.value.evalue for w in words), e.value.evalue
    assert not (tmp_path/'runs').exists() and not (tmp_path/'cache').exists()    # nothing was touched


def test_failed_redo_keeps_the_finished_run(tmp_path, monkeypatch):
    from ens_distill.pipeline import run_method
    from ens_distill.methods import METHODS, Method
    from ens_distill.runs import run_path
    cfg = get_config('smoke', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), dtype='fp32', tokens_per_member=256)
    run_method(cfg, progress=False, verbose=False)
    d = run_path(cfg); before = {f: (d/f).read_bytes() for f in ('metrics.json', 'metrics.csv', 'config.yaml', 'eval.json')}
    def boom(ctx): raise RuntimeError('injected failure while training')
    monkeypatch.setitem(METHODS, 'independent', Method('independent', boom, True, True))
    with pytest.raises(RuntimeError, match='injected'): run_method(cfg, overwrite=True, progress=False, verbose=False)
    assert {f: (d/f).read_bytes() for f in before} == before             # the finished run is intact
    monkeypatch.undo()
    m = run_method(cfg, overwrite=True, progress=False, verbose=False)    # a redo that finishes replaces it
    assert (d/'metrics.json').exists() and sorted(p.name for p in d.parent.iterdir()) == [d.name] and m['test_ppl'] > 1


def _rows(d): import csv; return [int(float(r['step'])) for r in csv.DictReader(open(d/'metrics.csv'))]


def test_resume_says_what_it_does_and_refuses_changed_settings(tmp_path, capsys):
    import shutil
    from dataclasses import replace
    from ens_distill.pipeline import run_method
    from ens_distill.runs import run_path
    cfg = get_config('smoke', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), dtype='fp32', tokens_per_member=1024,
                     ckpt_every=4, log_every=2)
    run_method(cfg, progress=False, verbose=False)
    d = run_path(cfg); full = _rows(d); assert full == sorted(set(full))           # one row per logged step
    # a killed run: metrics.json gone, the checkpoint at step 4 of 8 kept (as after a kill at step 5)
    import torch; from ens_distill.train import find_checkpoint
    (d/'metrics.json').unlink()
    with pytest.raises(EnsDistillError) as e: run_method(cfg, progress=False, verbose=False)    # a rerun without resume
    _one_line(e, 'checkpoint', 'resume=True')
    assert run_path(replace(cfg, lr=5e-3)) != d                                       # another lr is another run (its own folder) ...
    with pytest.raises(EnsDistillError) as e: run_method(replace(cfg, lr=5e-3, run_name=d.name), resume=True, progress=False, verbose=False)
    _one_line(e, 'other settings', 'lr')                                             # ... and forced into this one, it is refused
    capsys.readouterr(); run_method(cfg, resume=True, progress=False, verbose=False)
    assert 'resuming' in capsys.readouterr().out and _rows(d) == full               # no duplicated rows
    shutil.rmtree(d/'ckpt'); (d/'metrics.json').unlink()
    capsys.readouterr(); run_method(cfg, resume=True, progress=False, verbose=False)
    assert 'no checkpoint; training from step 0' in capsys.readouterr().out and _rows(d) == full
    run_method(cfg, overwrite=True, progress=False, verbose=False); assert _rows(d) == full


def test_resumed_boosting_keeps_every_row(tmp_path):
    from ens_distill.pipeline import run_method
    from ens_distill.runs import run_path
    cfg = get_config('smoke', method='boosting', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), dtype='fp32',
                     tokens_per_member=512, log_every=1)
    run_method(cfg, progress=False, verbose=False)
    d = run_path(cfg); full = _rows(d); (d/'metrics.json').unlink()
    run_method(cfg, resume=True, progress=False, verbose=False)
    assert _rows(d) == full and len(full) == 2 * 4                                   # both rounds' rows, once each


# ---- locks (#18 item 4) ----
import json, signal, subprocess, textwrap, time

def _env(): return {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}

HOLD = "import sys, time\nfrom ens_distill.runs import locked\nwith locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)\n"


def test_a_second_live_run_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    from ens_distill.pipeline import run_method
    from ens_distill.runs import run_path, lock_path
    cfg = get_config('smoke', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), dtype='fp32', tokens_per_member=256)
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(run_path(cfg))], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == 'held'                               # another live run holds the folder
        with pytest.raises(EnsDistillError) as e: run_method(cfg, progress=False, verbose=False)
        _one_line(e, 'locked by', f'pid {p.pid}', str(lock_path(run_path(cfg))))
        assert not run_path(cfg).exists() and not (tmp_path/'cache').exists()       # refused before any work
    finally: p.send_signal(signal.SIGKILL); p.wait()
    assert json.loads(lock_path(run_path(cfg)).read_text())['pid'] == p.pid       # a dead owner's lock file is left behind
    capsys.readouterr(); run_method(cfg, progress=False, verbose=False)            # ... and taken over
    assert 'taking over the stale lock' in capsys.readouterr().out and (run_path(cfg)/'metrics.json').exists()
    assert not lock_path(run_path(cfg)).exists()


BUILDER = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import ens_distill.data as data, ens_distill.teacher as teacher
    from ens_distill.core import get_config
    calls = dict(convert=0, data=0, shards=0)
    def counted(name, f, pause=0.):
        def g(*a, **k):
            calls[name] += 1; time.sleep(pause); return f(*a, **k)
        return g
    teacher.tiny_teacher = counted('convert', teacher.tiny_teacher, 1.)             # slow builders: the other process
    data._build = counted('data', data._build, 1.)                                  # arrives while they work
    teacher._build_shards = counted('shards', teacher._build_shards, 1.)
    go = Path(sys.argv[1])/'go'
    while not go.exists(): time.sleep(0.01)
    cfg = get_config('smoke', cache_dir=sys.argv[1] + '/cache')
    model, tok = teacher.load_teacher(cfg.teacher, cfg.cache_dir)
    corpus = data.prepare_data(cfg, tok)
    caches = teacher.teacher_caches(cfg, corpus, model, tok, progress=False)
    print(json.dumps(dict(calls, blocks=len(caches['train']))))
''')


def test_two_builders_of_one_cache_do_the_work_once(tmp_path):
    ps = [subprocess.Popen([sys.executable, '-c', BUILDER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=_env()) for _ in range(2)]
    time.sleep(1); (tmp_path/'go').touch()
    out = [p.communicate(timeout=600) for p in ps]
    assert all(p.returncode == 0 for p in ps), [o[1][-2000:] for o in out]
    got = [json.loads(o[0].strip().splitlines()[-1]) for o in out]
    assert sum(g['convert'] for g in got) == 1 and sum(g['data'] for g in got) == 1, got   # each entry built once,
    assert sum(g['shards'] for g in got) == 3 and got[0]['blocks'] == got[1]['blocks'], got  # the other waited and reused it
    left = [p.name for p in (tmp_path/'cache').rglob('*') if '.tmp' in p.name or p.name.endswith('.lock')]
    assert not left, left                                                            # no temp folder or lock left behind


# ---- the data cache is checksummed (#18 item 5) ----

def test_a_changed_byte_in_the_data_cache_names_that_file(tmp_path):
    cfg = _cfg(tmp_path); tok = tiny_tokenizer()
    corpus = prepare_data(cfg, tok)
    arrow = next((corpus.path/'blocks'/'train').glob('*.arrow')); raw = bytearray(arrow.read_bytes())
    raw[len(raw) // 2] ^= 1; arrow.write_bytes(bytes(raw))
    with pytest.raises(EnsDistillError) as e: prepare_data(cfg, tok)
    _one_line(e, 'data cache file', str(arrow), 'delete', str(corpus.path))
    assert 'top-k' not in str(e.value)


# ---- one-line errors (#18 items 5-6) ----

@pytest.mark.parametrize('key', ['out_dir', 'cache_dir'])
def test_an_unusable_out_dir_or_cache_dir(tmp_path, key):
    from ens_distill.pipeline import run_method
    (tmp_path/'file').write_text('not a folder')
    bad = {'parent': str(tmp_path/'file'/'sub'),
           'read-only': '/sys/ens_distill_ro' if os.geteuid() == 0 else str(tmp_path/'ro'/'sub')}
    if os.geteuid() != 0: (tmp_path/'ro').mkdir(); (tmp_path/'ro').chmod(0o500)
    for why, path in bad.items():
        paths = {**dict(out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache')), key: path}
        with pytest.raises(EnsDistillError) as e: run_method(get_config('smoke', **paths), progress=False, verbose=False)
        _one_line(e, key, path, 'not writable')
    assert not (tmp_path/'runs'/'independent-K2-tiny-s0').exists()


def test_a_truncated_teacher_in_a_local_folder(tmp_path):
    from ens_distill.pipeline import prepare_run
    from ens_distill.teacher import tiny_teacher
    m, tok = tiny_teacher(); m.save_pretrained(tmp_path/'t'); tok.save_pretrained(tmp_path/'t')
    f = tmp_path/'t'/'model.safetensors'; f.write_bytes(f.read_bytes()[:-1000])
    cfg = get_config('smoke', teacher=str(tmp_path/'t'), cache_dir=str(tmp_path/'cache'))
    with pytest.raises(EnsDistillError) as e: prepare_run(cfg, progress=False, verbose=False)
    _one_line(e, str(f), 'damaged', 'truncated')


def test_a_pruned_size_the_teacher_cannot_serve_fails_before_any_cache(tmp_path):
    from ens_distill.pipeline import prepare_run
    with pytest.raises(ConfigError) as e:
        prepare_run(get_config('smoke', size='p9', route_prefix=0, cache_dir=str(tmp_path/'cache')), progress=False, verbose=False)
    _one_line(e, "'size'", "'p9'", '2 layers')
    assert not (tmp_path/'cache'/'data').exists()


def test_eval_tokens_per_domain_too_small(tmp_path):
    with pytest.raises(EnsDistillError) as e: prepare_data(_cfg(tmp_path, eval_tokens_per_domain=8), tiny_tokenizer())
    _one_line(e, 'no dev block', 'eval_tokens_per_domain')


# ---- kills and damaged caches (#18: "kills runs at several points ... corrupts each cache file kind") ----

KILLED = textwrap.dedent('''
    import os, signal, sys, torch
    import ens_distill.train as train
    from ens_distill.core import get_config
    from ens_distill.pipeline import run_method
    from ens_distill.runs import RunDir
    out, cache, when, resume = sys.argv[1:5]
    torch.set_num_threads(1)
    cfg = get_config('smoke', out_dir=out, cache_dir=cache, dtype='fp32', device='cpu', tokens_per_member=1024, ckpt_every=2, log_every=1)
    if when == 'ckpt':                                        # right after the first checkpoint (step 2 of 8)
        save = train.save_checkpoint
        def kill_after(*a, **k): save(*a, **k); os.kill(os.getpid(), signal.SIGKILL)
        train.save_checkpoint = kill_after
    if when == 'mid':                                         # mid-training: step 5 logged, its last checkpoint at step 4
        log = RunDir.log
        def kill_at(self, row):
            log(self, row)
            if int(row['step']) == 5: os.kill(os.getpid(), signal.SIGKILL)
        RunDir.log = kill_at
    run_method(cfg, resume=resume == '1', progress=False, verbose=False)
''')

def _run_killable(out, cache, when='none', resume=False):
    return subprocess.run([sys.executable, '-c', KILLED, str(out), str(cache), when, '1' if resume else '0'], env=_env(),
                          capture_output=True, text=True, timeout=600)

def _record(d:Path)->dict:
    "What a finished run must reproduce: metrics rows, test numbers, member weights."
    import csv
    m = json.loads((d/'metrics.json').read_text())
    rows = [{k: v for k, v in r.items() if k != 'tokens_per_s'} for r in csv.DictReader(open(d/'metrics.csv'))]   # throughput is timing
    return dict(rows=rows, test=[m[k] for k in ('test_ppl', 'kl_teacher', 'mean_member_ppl')],
                members={p.parent.name: p.read_bytes() for p in sorted((d/'members').glob('*/model.safetensors'))})


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    from ens_distill.runs import run_path
    cache = tmp_path/'cache'
    r = _run_killable(tmp_path/'ref', cache); assert r.returncode == 0, r.stderr[-2000:]
    cfg = lambda out: get_config('smoke', out_dir=str(out), dtype='fp32', tokens_per_member=1024)
    ref = _record(run_path(cfg(tmp_path/'ref')))
    assert [int(x['step']) for x in ref['rows']] == list(range(1, 9))
    for when in ('ckpt', 'mid'):
        out = tmp_path/when; d = run_path(cfg(out))
        r = _run_killable(out, cache, when); assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert not (d/'metrics.json').exists() and (d/'ckpt').exists()
        r = _run_killable(out, cache, resume=True); assert r.returncode == 0, r.stderr[-2000:]
        assert f"from step {dict(ckpt=2, mid=4)[when]} of 8" in r.stdout and 'taking over the stale lock' in r.stdout
        got = _record(d)
        assert [int(x['step']) for x in got['rows']] == list(range(1, 9))          # exactly one row per logged step
        assert got == ref, when                                                       # the same rows, numbers and weights


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    from ens_distill.pipeline import run_method
    from ens_distill.runs import run_path
    t = tmp_path_factory.mktemp('finished')
    cfg = get_config('smoke', out_dir=str(t/'runs'), cache_dir=str(t/'cache'), dtype='fp32', tokens_per_member=256)
    run_method(cfg, progress=False, verbose=False)
    return cfg, run_path(cfg), t/'cache'


@pytest.mark.parametrize('kind, glob, how', [
    ('top-k shard', 'topk/*/train/shard_00000.safetensors', 'flip'),
    ('top-k manifest', 'topk/*/test/manifest.json', 'cut'),
    ('data arrow file', 'data/*/blocks/train/*.arrow', 'flip'),
    ('data meta', 'data/*/meta.json', 'cut'),
    ('converted teacher', 'teachers/tiny-random/model.safetensors', 'cut'),
])
def test_a_damaged_cache_file_is_named_and_no_finished_run_changes(finished, kind, glob, how):
    from ens_distill.pipeline import run_method
    cfg, d, cache = finished
    (f,) = cache.glob(glob); good = f.read_bytes()
    before = {p.relative_to(d): p.read_bytes() for p in d.rglob('*') if p.is_file()}
    bad = bytearray(good)
    if how == 'flip': bad[len(bad) // 2] ^= 1
    f.write_bytes(bytes(bad) if how == 'flip' else good[:len(good) // 2])
    try:
        with pytest.raises(EnsDistillError) as e: run_method(cfg, overwrite=True, progress=False, verbose=False)
        _one_line(e, str(f), 'delete')
    finally: f.write_bytes(good)
    assert {p.relative_to(d): p.read_bytes() for p in d.rglob('*') if p.is_file()} == before    # the finished run as it was
    assert sorted(p.name for p in d.parent.iterdir() if not p.name.startswith('.')) == [d.name]


@pytest.mark.parametrize('other, words', [(dict(vocab_size=400), ['vocab_size 400 vs 384']),
                                          (dict(hidden_size=64, intermediate_size=128), ['hidden_size 64 vs 32', 'one size'])])
def test_eval_bridge_refuses_members_that_do_not_match(tmp_path, other, words):
    from transformers import LlamaForCausalLM
    from ens_distill.lmeval import EnsembleLM
    from ens_distill.packed import student_config
    tok = tiny_tokenizer()
    for i, over in enumerate([{}, {}, other]):
        LlamaForCausalLM(student_config('tiny', **{'vocab_size': len(tok), **over})).save_pretrained(tmp_path/'run'/'members'/f'member_{i}')
        tok.save_pretrained(tmp_path/'run'/'members'/f'member_{i}')
    with pytest.raises(EnsDistillError) as e: EnsembleLM(run=str(tmp_path/'run'), device='cpu')
    _one_line(e, 'member_2', *words)


# ---- run names distinguish every result-changing setting (#18 item 4) ----

def test_a_sweep_gets_one_folder_per_setting_and_committed_names_still_parse(tmp_path):
    from ens_distill.runs import run_name, parse_run_name, variant_of
    from ens_distill.scaling import fake_run
    from ens_distill.report import collect_runs, leaderboard
    sweep = [run_name(get_config('smoke', **kw)) for kw in (dict(), dict(lr=3e-3), dict(lr=1e-3), dict(dtype='fp32'),
                                                            dict(holdout_domains=['code']), dict(warmup_frac=0.1))]
    assert len(set(sweep)) == len(sweep) and all(parse_run_name(n)['K'] == 2 for n in sweep), sweep
    assert run_name(get_config('smoke', lr=1e-3, out_dir='/elsewhere', ckpt_every=7, log_every=3)) == sweep[2]
    root = Path(__file__).parents[1]/'reports'
    committed = [p.name for p in root.glob('*/*-K*-s*') if (p/'metrics.json').exists()]
    assert committed and all(parse_run_name(n) for n in committed), committed
    for lr in (1e-2, 1e-3): fake_run(tmp_path, lr=lr)                                # the report keeps an lr sweep apart
    df = collect_runs(tmp_path)
    assert len(df) == 2 and df.variant.nunique() == 2 and len(leaderboard(df)) == 2


def test_console_scripts_print_one_line_errors(tmp_path):
    "A bad input to a command-line entry point prints one line `error: ...`, no traceback (#18 item 6)."
    import subprocess, sys
    exe = Path(sys.executable).parent/'ens-distill-prepare'
    if not exe.exists(): pytest.skip('console scripts not installed in this environment')
    r = subprocess.run([str(exe), '--preset', 'nosuch'], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith('error: ') and 'nosuch' in lines[0], r.stderr[-800:]
