"Statistics: bootstrap CIs cover known differences at the nominal rate, verdicts, McNemar, equal-mass ECE (nbs/07_stats.ipynb)."
import math
import numpy as np, pytest
from ens_distill.core import EnsDistillError
from ens_distill.stats import paired_bootstrap, verdict, mcnemar, task_compare, mean_ci, ece, mean_sd


def _draw(rng, delta, G=30, per=4, T=50):
    doc = np.repeat(np.arange(G), per)
    a = (rng.normal(3, .5, G)[doc] + rng.normal(0, .3, G * per)) * T
    return a, a - delta * T + rng.normal(0, .25, G * per) * T, np.full(G * per, T), doc


@pytest.mark.parametrize('delta', [0., .04])
def test_bootstrap_coverage(delta):
    rng = np.random.default_rng(7)
    hits = [(lambda r: r['lo'] <= delta <= r['hi'])(paired_bootstrap(*_draw(rng, delta), n_boot=300, seed=i)) for i in range(300)]
    assert .91 <= np.mean(hits) <= .985, np.mean(hits)           # nominal 0.95 (percentile bootstrap runs a little narrow)


def test_bootstrap_exact_parts():
    x, y, n = np.array([3., 5., 2.]), np.array([1., 1., 1.]), np.array([1., 2., 1.])
    r = paired_bootstrap(x, y, n, groups=[0, 0, 1], n_boot=50)
    assert r['diff'] == pytest.approx(7 / 4) and (r['n_groups'], r['n_units'], r['n_seeds']) == (2, 3, 1)
    z = paired_bootstrap(x, x, n)                                 # identical systems: a zero-width interval at 0
    assert z['diff'] == z['lo'] == z['hi'] == 0
    with pytest.raises(EnsDistillError, match='same units'): paired_bootstrap(x, y[:2])


def test_verdicts_and_tasks():
    assert [verdict(dict(lo=l, hi=h)) for l, h in [(-1, -.1), (.1, 1), (-.1, .1)]] == ['supported', 'contradicted', 'inconclusive']
    assert verdict(dict(lo=.1, hi=.2), 'higher') == 'supported'
    assert mcnemar([1, 0, 1], [1, 0, 1]) == dict(a_only=0, b_only=0, p=1.0)
    assert mcnemar([1] * 6, [0] * 6)['p'] == pytest.approx(2 / 64)
    rng = np.random.default_rng(0); a = rng.random(500) < .5
    assert task_compare(a, a)['verdict'] == 'inconclusive'


def _items(rng, U=400, joint=(.40, .15, .10, .35), dll=.3):
    "Two systems on U shared items: (A, B) correct with probabilities 11, 10, 01, 00 (true A - B = 10 - 01), gold log-likelihoods A - B = dll."
    k = rng.choice(4, U, p=joint)
    a, b = np.isin(k, [0, 1]).astype(float), np.isin(k, [0, 2]).astype(float)
    base = rng.normal(-20, 6, U)                                        # an item's difficulty, shared by both systems
    return a, b, base + dll + rng.normal(0, 1, U), base + rng.normal(0, 1, U)


def test_task_compare_coverage():
    "Accuracy and gold log-likelihood differences on the same items: the 95% CIs cover the true values (0.05, 0.3) at about the nominal rate."
    rng = np.random.default_rng(11)
    rs = [task_compare(*_items(rng), n_boot=300, seed=i) for i in range(300)]
    acc = np.mean([r['lo'] <= .05 <= r['hi'] for r in rs]); ll = np.mean([r['ll_lo'] <= .3 <= r['ll_hi'] for r in rs])
    assert .91 <= acc <= .985 and .91 <= ll <= .985, (acc, ll)
    assert np.mean([r['ll_verdict'] == 'supported' for r in rs]) > .9           # 0.3 nats over 400 items is clearly detected
    assert np.mean([r['verdict'] == 'contradicted' for r in rs]) < .01           # never the wrong way round (beyond chance)


def test_task_compare_null_and_ties():
    "Equal systems: the verdict is rarely anything but inconclusive; identical answers are a tie (zero-width CI at 0)."
    rng = np.random.default_rng(12)
    rs = [task_compare(*_items(rng, joint=(.4, .125, .125, .35), dll=0.), n_boot=300, seed=i) for i in range(200)]
    assert np.mean([r['verdict'] != 'inconclusive' for r in rs]) < .1 and np.mean([r['ll_verdict'] != 'inconclusive' for r in rs]) < .1
    a, _, la, _ = _items(rng)
    t = task_compare(a, a, la, la)
    assert (t['verdict'], t['ll_verdict'], t['lo'], t['hi'], t['p']) == ('inconclusive', 'inconclusive', 0., 0., 1.)
    assert 'll_diff' not in task_compare(a, a)


def test_mean_ci_coverage():
    "A single system's accuracy: the bootstrap CI covers the true rate at about the nominal rate."
    rng = np.random.default_rng(13)
    hits = np.mean([(lambda r: r['lo'] <= .3 <= r['hi'])(mean_ci(rng.random(300) < .3, n_boot=300, seed=i)) for i in range(300)])
    assert .91 <= hits <= .985, hits
    r = mean_ci(np.ones((3, 10)))
    assert (r['mean'], r['lo'], r['hi'], r['n'], r['n_seeds']) == (1., 1., 1., 10, 3)


def test_ece_equal_mass():
    rng = np.random.default_rng(0); c = rng.random(20_000)
    assert ece(c, rng.random(20_000) < c)['ece'] < .015
    r = ece(np.r_[np.full(50, .9), np.full(50, .1)], np.r_[np.ones(50), np.zeros(50)], bins=2)
    assert r['ece'] == pytest.approx(.1) and [b[2] for b in r['bins']] == [50, 50]
    assert not ece(np.full(10, .05), np.zeros(10))['informative']
    m, s, k = mean_sd([2., 4.]); assert (m, k) == (3., 2) and s == pytest.approx(math.sqrt(2))
