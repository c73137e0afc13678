"Config, presets and run directories (nbs/00_core.ipynb)."
import json, pytest
from ens_distill.core import *
from ens_distill.runs import RunDir, run_name


def test_presets_validate():
    for p in PRESETS: assert validate(get_config(p)).method == 'independent'


@pytest.mark.parametrize('kw,msg', [(dict(KK=1), "unknown config key 'KK'"), (dict(method='magic'), "'method'"),
                                    (dict(tau=0.0), "'tau'"), (dict(K=1.5), "'K'"), (dict(dev_frac=.6, test_frac=.6), 'dev_frac')])
def test_bad_config_one_line(kw, msg):
    with pytest.raises(ConfigError) as e: get_config('smoke', **kw)
    assert msg in str(e.value) and '\n' not in str(e.value)


def test_yaml_roundtrip(tmp_path):
    cfg = get_config('study', K=8, seeds=[3, 4])
    to_yaml(cfg, tmp_path/'c.yaml')
    assert from_yaml(tmp_path/'c.yaml') == cfg


def test_rundir_keeps_data(tmp_path):
    rd = RunDir(get_config('smoke', out_dir=str(tmp_path)))
    rd.log(dict(step=1, loss=1.0)); rd.log(dict(step=2, loss=0.5, grad_norm=2.0))
    rd.finish(dict(ppl=2.0))
    with pytest.raises(EnsDistillError): RunDir(get_config('smoke', out_dir=str(tmp_path)))
    assert json.loads((rd.path/'metrics.json').read_text()) == dict(ppl=2.0)
    assert [r['step'] for r in rd.rows()] == ['1', '2']
