"Statistics: bootstrap CIs cover known differences at the nominal rate, verdicts, McNemar, equal-mass ECE (nbs/07_stats.ipynb)."
import math
import numpy as np, pytest
from ens_distill.core import EnsDistillError
from ens_distill.stats import paired_bootstrap, verdict, mcnemar, task_compare, ece, mean_sd


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


def test_ece_equal_mass():
    rng = np.random.default_rng(0); c = rng.random(20_000)
    assert ece(c, rng.random(20_000) < c)['ece'] < .015
    r = ece(np.r_[np.full(50, .9), np.full(50, .1)], np.r_[np.ones(50), np.zeros(50)], bins=2)
    assert r['ece'] == pytest.approx(.1) and [b[2] for b in r['bins']] == [50, 50]
    assert not ece(np.full(10, .05), np.zeros(10))['informative']
    m, s, k = mean_sd([2., 4.]); assert (m, k) == (3., 2) and s == pytest.approx(math.sqrt(2))
