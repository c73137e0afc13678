"Members cut from the teacher, the frozen shared head and the headline pair's FLOP accounting (nbs/35_prune, 30_packed, 50_methods)."
import os, tempfile
from dataclasses import replace
import pytest, torch
from transformers import AutoModelForCausalLM
from ens_distill.core import get_config, EnsDistillError, ConfigError
from ens_distill.teacher import tiny_teacher, load_teacher
from ens_distill.packed import PackedEnsemble
from ens_distill.prune import (block_influence, layer_choice, prune_layers, pruned_members, width_scores, prune_width,
                               member_config, parse_cut)
from ens_distill.compute import llama_params, non_embedding_params, train_flops

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
slow = pytest.mark.skipif(not os.environ.get('ENS_DISTILL_SLOW'), reason='slow: set ENS_DISTILL_SLOW=1')


@pytest.fixture(scope='module')
def teacher():
    torch.manual_seed(0)
    tm, tok = tiny_teacher()
    return tm.float().eval(), torch.randint(0, len(tok), (4, 16), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_keeping_every_layer_is_the_teacher(teacher):
    tm, x = teacher
    n = tm.config.num_hidden_layers
    assert torch.equal(prune_layers(tm, list(range(n)))(x).logits, tm(x).logits)          # bit for bit
    ms, layers = pruned_members(tm, f'p{n}', 2)
    assert layers == [list(range(n))] * 2
    torch.testing.assert_close(PackedEnsemble.from_members(ms)(x)[1], tm(x).logits, atol=1e-5, rtol=0)


@slow
@torch.no_grad()
def test_p30_of_the_real_teacher_is_the_teacher():
    tm = load_teacher('smollm2-135m-instruct')[0].float().eval()
    x = torch.randint(0, tm.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    ms, layers = pruned_members(tm, 'p30', 1)
    assert layers == [list(range(30))]
    assert torch.equal(ms[0](x).logits, tm(x).logits)


def test_importance_is_reproducible(teacher):
    tm, x = teacher
    a, b, c = block_influence(tm, x, 2), block_influence(tm, x, 2), block_influence(tm, x, 4)
    assert torch.equal(a, b)                                                             # the same call: the same scores
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)                                  # and any batching
    assert layer_choice(len(a), 1, 'importance', scores=a) == [int(a.argmax())]
    assert pruned_members(tm, 'p1', 1, 'importance', calib=x)[1] == pruned_members(tm, 'p1', 1, 'importance', calib=x)[1]


@torch.no_grad()
def test_width_cut(teacher):
    tm, x = teacher
    ws = width_scores(tm, x, 2)
    torch.testing.assert_close(prune_width(tm, ws)(x).logits, tm(x).logits, atol=1e-5, rtol=0)
    m = prune_width(tm, ws, ffn=8, groups=1)
    assert llama_params(m.config) == sum(p.numel() for p in m.parameters())
    assert m.config == member_config('p2f8g1', tm.config) or llama_params(member_config('p2f8g1', tm.config)) == llama_params(m.config)
    torch.testing.assert_close(PackedEnsemble.from_members([m])(x)[0], m(x).logits, atol=1e-5, rtol=0)   # fp32 packed == HF
    assert parse_cut('p30f96g1') == dict(layers=30, ffn=96, groups=1) and parse_cut('s') is None


def _shared(tm):
    ms, _ = pruned_members(tm, 'p1', 3, 'offset')
    return ms, PackedEnsemble.from_members(ms, share_embedding=True)


def test_frozen_shared_head(teacher):
    tm, x = teacher
    ms, ens = _shared(tm)
    V, d = tm.config.vocab_size, tm.config.hidden_size
    assert ens.embed.shape == (1, V, d) and not ens.embed.requires_grad                  # one copy, frozen
    assert ens.head_weight.shape == (3, V, d) and ens.head_weight.stride(0) == 0          # viewed K times, no copy
    h = ens.hidden(x)
    y = x.roll(-1, 1).reshape(-1)
    loss = ens.head_loss(h, lambda lg, sl: torch.nn.functional.cross_entropy(lg.flatten(0, 1), y[sl].repeat(3), reduction='sum'))
    loss.backward()
    assert ens.embed.grad is None and all(p.grad is not None for n, p in ens.named_parameters() if n != 'embed')
    with tempfile.TemporaryDirectory() as dd:
        ens.save_members(dd)
        m1 = AutoModelForCausalLM.from_pretrained(f'{dd}/member_1')                      # a member loads alone
        with torch.no_grad(): torch.testing.assert_close(m1(x).logits, ms[1](x).logits, atol=1e-5, rtol=0)


def test_frozen_head_training_and_flops(teacher, tmp_path):
    from ens_distill.pipeline import prepare_run
    from ens_distill.methods import Context, independent, single_large, ensemble_flops
    cfg = get_config('smoke', out_dir=str(tmp_path/'runs'), cache_dir=str(tmp_path/'cache'), dtype='fp32', size='p1',
                     tokens_per_member=256)
    prep = prepare_run(cfg, progress=False, verbose=False)
    ctx = lambda **kw: Context(replace(cfg, **kw), prep['model'], prep['tokenizer'], prep['corpus'], prep['caches'], progress=False)
    E0 = prep['model'].get_input_embeddings().weight.detach().clone()
    ens, s = independent(ctx(share_embedding=True))
    assert torch.equal(ens.embed[0].detach(), E0)                                        # trained, the head never moved
    P, fr = llama_params(ens.config), E0.numel()
    assert (s['params_per_member'], s['frozen_per_member']) == (P, fr)
    assert s['train_flops'] == (6. * (P - fr) + 4. * fr) * s['tokens_per_member'] * 2
    assert s['nonemb_params_per_member'] == non_embedding_params(ens.config)
    for share in (False, True):                                                          # the headline pair: equal FLOPs
        c = ctx(share_embedding=share)
        _, e = independent(c); _, one = single_large(c)
        assert e['train_flops'] == ensemble_flops(c) and one['large_size'] == 'p2' and one['K'] == 1
        step = train_flops(one['params_per_member'], cfg.batch_size * cfg.block_size, 1, one['frozen_per_member'])
        assert abs(one['train_flops'] - e['train_flops']) <= step
    with pytest.raises(ConfigError, match='share_embedding'): get_config('smoke', share_embedding=True)
    ms = pruned_members(prep['model'], 'p1', 2, 'offset')[0]
    with torch.no_grad(): ms[1].model.embed_tokens.weight.add_(1.)
    with pytest.raises(EnsDistillError, match='differ'): PackedEnsemble.from_members(ms, share_embedding=True)
