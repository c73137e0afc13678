#!/bin/bash
# The first study (issue #8, the `study1` preset: the first regime, kept as its record): every run, grid, sweep and task score behind reports/study/ and reports/site/, in order.
# usage: bash scripts/study.sh [STAGE ...]     stages: grid main grid_ens sweep tasks report (default: all; also
#        tasks1..tasks4 one task pass each, sweep_cbtm the c-BTM sweep)
# Each step is one papermill notebook; rerunning a step redoes it and gives the same metrics (CPU determinism:
# fixed seeds, PYTHONHASHSEED=0, the same torch thread count). `make setup` must have run (it creates .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=reports/study
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
JE=$(ls /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 2>/dev/null | head -1 || true)
[ -n "$JE" ] && export LD_PRELOAD=$JE MALLOC_CONF=retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1
mkdir -p $OUT
pm_run() { local name=$1; shift; echo "== $name"; $BIN/papermill nbs/run_method.ipynb $OUT/$name.ipynb -k python3 -p preset study1 "$@"; }

grid() {       # alpha x tau on dev perplexity for `single`; records tau_choice.json, which every later run reuses
  $BIN/papermill nbs/run_grid.ipynb $OUT/grid-single.ipynb -k python3 -p preset study1 -p method single
}
main() {       # every method, seeds 0 1 2 (the study preset's); the teacher once (nothing in it depends on the seed)
  pm_run independent -p method independent
  pm_run single -p method single
  pm_run single_matched -p method single_matched
  pm_run raw -p method raw
  pm_run cbtm-learned -p method cbtm -p routing learned
  pm_run cbtm -p method cbtm -p routing uniform
  pm_run cbtm-tfidf -p method cbtm -p routing tfidf
  pm_run bagging -p method bagging
  pm_run ncl -p method ncl
  pm_run boosting -p method boosting
  pm_run boosting-topq0.1 -p method boosting -y "extra: {boost_q: 0.1}"
  pm_run boosting-weighted0.25 -p method boosting -y "extra: {boost_mode: weighted}"
  pm_run teacher_ft -p method teacher_ft
  pm_run teacher -p method teacher -p seeds '[0]'
  pm_run synthetic -p method synthetic -y "extra: {gen_seed: 0}"   # one teacher-generated corpus (seed 0) for all seeds
}
# the task suite: fixed 40-item subsamples (the same items for every run); each pass adds scores to the runs' metrics
HEAD='single_matched cbtm-learned cbtm cbtm-tfidf independent teacher single'   # the headline entries
MC='["ed_arc_easy", "ed_arc_challenge", "ed_hellaswag", "ed_mmlu_lite", "ed_lambada", "ed_boolq"]'
EX='["*-a0*", "*-t2-*"]'   # grid points are not entries of the task table
globs() { for m in $HEAD; do printf '"%s/%s-K4-xs-%s", ' $OUT $m "$1"; done; }
tasks_pass() { $BIN/papermill nbs/run_tasks.ipynb $OUT/$1.ipynb -k python3 -p runs "$2" -p exclude "$EX" -p tasks "$3"; }
tasks1() { tasks_pass tasks-headline "[$(globs 's*')]" "$MC"; }                      # every seed of the headline entries
tasks2() { tasks_pass tasks-others "[\"$OUT/*-K4-xs-s0\"]" "$MC"; }                 # seed 0 of every other entry
tasks3() { tasks_pass tasks-gsm8k "[\"$OUT/teacher-K4-xs-s0\", \"$OUT/single_matched-K4-xs-s0\", \"$OUT/cbtm-learned-K4-xs-s0\"]" '["ed_gsm8k"]'; }  # 10 generations, 5-shot
tasks4() { tasks_pass tasks-rest "[\"$OUT/*-K4-xs-s*\"]" "$MC"; }                   # the remaining seeds
tasks() { tasks1; tasks2; tasks3; tasks4; }
grid_ens() {   # alpha {0.5, 1} x tau {1, 2} for the best ensemble method (c-BTM, learned routing); keeps single's tau choice
  $BIN/papermill nbs/run_grid.ipynb $OUT/grid-cbtm-learned.ipynb -k python3 -p preset study1 -p method cbtm -p record False -p alphas '[0.5, 1.0]' \
    -y "extra: {routing: learned}"
}
sweep() {      # K sweep (xs) and member-size sweep (tiny, xs, s at K=4) at the study's per-member budget, seed 0.
  # `independent`, the best method whose data does not depend on K: c-BTM's clusters (and so its data fingerprint and
  # teacher cache) change with K, which costs a new teacher cache per K (sweep_cbtm, not run for the committed study).
  $BIN/papermill nbs/run_scaling.ipynb $OUT/scaling-independent.ipynb -k python3 -p preset study1 -p method independent \
    -p budget per_member -p also_per_member False -p seeds '[0]' -p out_dir reports/study-sweeps \
    -p pairs '[[1, "xs"], [2, "xs"], [4, "xs"], [8, "xs"], [12, "xs"], [4, "tiny"], [4, "s"]]'
}
sweep_cbtm() { # the same sweep for c-BTM with a learned router (about 3.5 min more per K on 2 cores for its teacher cache)
  $BIN/papermill nbs/run_scaling.ipynb $OUT/scaling-cbtm-learned.ipynb -k python3 -p preset study1 -p method cbtm \
    -p budget per_member -p also_per_member False -p seeds '[0]' -p out_dir reports/study-sweeps \
    -p pairs '[[1, "xs"], [2, "xs"], [4, "xs"], [8, "xs"], [12, "xs"], [4, "tiny"], [4, "s"]]' -y "extra: {routing: learned}"
}
report() {     # the report notebook and the HTML site
  $BIN/ens-distill-publish --runs_dir $OUT --sweeps_dir reports/study-sweeps --site_dir reports/site
}

stages=${*:-grid main grid_ens sweep tasks report}
for s in $stages; do echo "=== stage $s ($(date +%T))"; $s; done
