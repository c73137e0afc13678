"The shared training loop: kill/resume determinism, NaN guard, per-member independence (nbs/45_train.ipynb)."
import os, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from ens_distill.core import *
from ens_distill.runs import RunDir, run_path
from ens_distill.teacher import tiny_teacher, TopKCache
from ens_distill.packed import PackedEnsemble, student_config
from ens_distill.train import Plan, train, find_checkpoint

SCRIPT = textwrap.dedent('''
    import sys, torch
    from safetensors.torch import save_file
    from ens_distill.core import *
    from ens_distill.runs import RunDir
    from ens_distill.teacher import tiny_teacher, TopKCache
    from ens_distill.packed import PackedEnsemble, student_config
    from ens_distill.train import Plan, train
    out, resume = sys.argv[1], sys.argv[2] == '1'
    torch.set_num_threads(1)
    tm, tt = tiny_teacher(); toks = torch.randint(0, len(tt), (16, 32), generator=torch.Generator().manual_seed(0))
    cache = TopKCache.build(tm, toks, out + '/cache', k=8, progress=False)
    cfg = get_config('smoke', out_dir=out + '/runs', tokens_per_member=600*4*32, ckpt_every=25, log_every=5, dtype='fp32', device='cpu')
    torch.manual_seed(0); ens = PackedEnsemble(student_config('tiny', len(tt)), 2)
    train(ens, toks, cache, cfg, Plan([torch.arange(16), torch.arange(8)]), run=RunDir(cfg, resume=resume), resume=resume, progress=False)
    save_file({k: v.contiguous() for k, v in ens.state_dict().items()}, out + '/final.safetensors')
''')

def _run(out, resume, kill_when_ckpt=False):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, '-c', SCRIPT, str(out), '1' if resume else '0'], env=env)
    if kill_when_ckpt:
        ck = run_path(get_config('smoke', out_dir=str(out/'runs'), tokens_per_member=600*4*32, dtype='fp32'))/'ckpt'/'state.pt'
        t0 = time.time()
        while not ck.exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
    return p.wait(timeout=600)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    a, b = tmp_path/'a', tmp_path/'b'
    assert _run(a, False) == 0
    assert _run(b, False, kill_when_ckpt=True) == -signal.SIGKILL, 'the run finished before it could be killed'
    assert not (b/'final.safetensors').exists()
    assert _run(b, True) == 0
    wa, wb = load_file(str(a/'final.safetensors')), load_file(str(b/'final.safetensors'))
    for k in wa: assert torch.equal(wa[k], wb[k]), k
    rows = RunDir(get_config('smoke', out_dir=str(b/'runs'), tokens_per_member=600*4*32, dtype='fp32'), resume=True).rows()
    steps = [int(r['step']) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 600


class NaNCache:
    "A cache that turns bad after `n` reads."
    def __init__(self, c, n): self.c, self.n = c, n
    def get(self, idx, tau=1.):
        self.n -= 1
        ids, lp, tl = self.c.get(idx, tau)
        return (ids, lp * float('nan'), tl) if self.n < 0 else (ids, lp, tl)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('t')
    tm, tt = tiny_teacher(); toks = torch.randint(0, len(tt), (8, 16), generator=torch.Generator().manual_seed(1))
    return d, toks, TopKCache.build(tm, toks, d/'cache', k=8, progress=False), len(tt)


def test_nan_stops_and_keeps_checkpoint(setup):
    d, toks, cache, V = setup
    cfg = get_config('smoke', out_dir=str(d/'runs'), tokens_per_member=20*4*16, ckpt_every=4, dtype='fp32', device='cpu')
    torch.manual_seed(0); ens = PackedEnsemble(student_config('tiny', V), 1)
    run = RunDir(cfg)
    with pytest.raises(EnsDistillError, match='non-finite loss at step 11'):
        train(ens, toks, NaNCache(cache, 10), cfg, Plan([torch.arange(8)]), run=run, progress=False)
    st = torch.load(find_checkpoint(run.path/'ckpt')/'state.pt', weights_only=True)
    assert st['step'] == 8
    assert all(torch.isfinite(v).all() for v in load_file(str(run.path/'ckpt'/'model.safetensors')).values())


def test_members_train_independently(setup):
    "Member 0 of a K=2 packed run equals a K=1 run with member 0's init and data (per-member clipping, no coupling)."
    d, toks, cache, V = setup
    cfg = get_config('smoke', tokens_per_member=6*4*16, grad_clip=0.05, dtype='fp32', device='cpu', seed=3)
    torch.manual_seed(0); two = PackedEnsemble(student_config('tiny', V), 2)
    one = PackedEnsemble(student_config('tiny', V), 1)
    one.load_state_dict({k: v[:1].clone() for k, v in two.state_dict().items()})
    train(two, toks, cache, cfg, Plan([torch.arange(8), torch.arange(4)]), progress=False)
    train(one, toks, cache, cfg, Plan([torch.arange(8)]), progress=False)
    for (k, a), b in zip(two.state_dict().items(), one.state_dict().values()): torch.testing.assert_close(a[:1], b, rtol=1e-5, atol=1e-6, msg=k)
