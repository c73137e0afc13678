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
