"""Sequences and sleep (paper section 7), the block-goodness and fast-learning recipes.

Synthetic strings stand in for the Aesop text (the loader is replaced), except in the one test
that checks the real split when the text is at hand."""
from pathlib import Path

import pytest
import torch

import fflab.experiments.sequences as seq
from fflab import runs
from fflab.config import apply_overrides, to_dict
from fflab.errors import ConfigError
from fflab.experiments import config_from_dict as from_dict
from fflab.experiments.sequences import (
    CONTEXT,
    IN_FEATURES,
    NUM_SYMBOLS,
    SequenceBPConfig,
    SequenceFFConfig,
    candidate_goodness,
    contexts,
    encode_cases,
    generate,
    phase_schedule,
    sample_candidates,
    teacher_negatives,
)
from fflab.nets import FFNet
from fflab.recipes import all_recipes
from fflab.train import build_task, evaluate_run, fit

QUIET = dict(progress=False, log=lambda s: None)
TINY = dict(hidden=(24, 24), epochs=2, batch_size=2, threads=1)


def synthetic_strings(n, length=100, seed=0):
    """Strings of a toy language: each character is a fixed function of the one before it
    (a random permutation), from a random first character."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(NUM_SYMBOLS, generator=torch.Generator().manual_seed(123))
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, NUM_SYMBOLS, (n,), generator=g)
    for t in range(1, length):
        x[:, t] = perm[x[:, t - 1]]
    return x


@pytest.fixture
def fake_aesop(monkeypatch):
    x = synthetic_strings(seq.NUM_TRAIN + seq.NUM_HELDOUT)
    monkeypatch.setattr(seq, "_load_strings", lambda data_dir: x.clone())
    return x


def ff_cfg(**kw):
    return apply_overrides(SequenceFFConfig(), {**TINY, **kw})


def random_net(seed=0, hidden=(16, 12)):
    torch.manual_seed(seed)
    return FFNet.dense(IN_FEATURES, hidden)


# ----------------------------------------------------------------------------- cases
def test_contexts_against_loops():
    x = synthetic_strings(3, length=25)
    ctx, nxt = contexts(x)
    assert ctx.shape == (3 * 15, CONTEXT) and nxt.shape == (3 * 15,)
    rows = [(x[b, t - CONTEXT:t], x[b, t]) for b in range(3) for t in range(CONTEXT, 25)]
    for i, (c, n) in enumerate(rows):
        assert torch.equal(ctx[i], c) and nxt[i] == n
    with pytest.raises(ValueError, match="no position to predict"):
        contexts(x[:, :CONTEXT])


def test_encode_cases_layout():
    ctx, nxt = torch.tensor([[3] * CONTEXT, list(range(CONTEXT))]), torch.tensor([29, 0])
    e = encode_cases(ctx, nxt)
    assert e.shape == (2, IN_FEATURES) and e.dtype == torch.float32
    assert (e.sum(1) == CONTEXT + 1).all()
    assert e[0, 3] == 1 and e[0, 30 + 3] == 1 and e[0, 300 + 29] == 1
    assert e[1, 30 * 9 + 9] == 1 and e[1, 300] == 1


def test_candidate_goodness_matches_plain_forward():
    net = random_net()
    ctx = torch.randint(0, NUM_SYMBOLS, (7, CONTEXT), generator=torch.Generator().manual_seed(1))
    fast = candidate_goodness(net, ctx, chunk=60)  # several chunks
    with torch.no_grad():
        cand = torch.arange(NUM_SYMBOLS)
        hs = net(encode_cases(ctx.repeat_interleave(NUM_SYMBOLS, 0), cand.repeat(7)))
        ref = net.goodness(hs, [0, 1]).view(7, NUM_SYMBOLS)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(candidate_goodness(net, ctx, layers=[1]),
                               net.layers[1].goodness(hs[1]).view(7, NUM_SYMBOLS).detach(), rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- negatives
def preferring_net(char: int, strength: float = 3.0) -> FFNet:
    """One layer whose goodness is high only when the candidate is ``char``."""
    net = FFNet.dense(IN_FEATURES, (8,))
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.zero_()
        net.layers[0].weight[:, CONTEXT * NUM_SYMBOLS + char] = strength
    return net


def test_teacher_negatives_come_from_the_model():
    ctx = torch.randint(0, NUM_SYMBOLS, (500, CONTEXT), generator=torch.Generator().manual_seed(0))
    for char in (4, 17):
        neg = teacher_negatives(preferring_net(char), ctx, generator=torch.Generator().manual_seed(0))
        assert (neg == char).float().mean() > 0.95
    # exclude_true: never the true character, even when the model prefers it
    true = torch.full((500,), 4)
    neg = teacher_negatives(preferring_net(4), ctx, generator=torch.Generator().manual_seed(0), exclude=true)
    assert (neg != 4).all()


def test_deterministic_generator_deterministic_negatives():
    net = random_net()
    ctx = torch.randint(0, NUM_SYMBOLS, (200, CONTEXT), generator=torch.Generator().manual_seed(0))
    draw = lambda s, **kw: teacher_negatives(net, ctx, generator=torch.Generator().manual_seed(s), **kw)
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    # temperature 0: the model's argmax, no randomness
    assert torch.equal(draw(3, temperature=0.0), candidate_goodness(net, ctx).argmax(1))
    start = ctx[:5]
    gen = lambda s: generate(net, start, 40, generator=torch.Generator().manual_seed(s))
    assert torch.equal(gen(1), gen(1)) and not torch.equal(gen(1), gen(2))


def test_generated_strings_come_from_the_model():
    start = torch.randint(0, NUM_SYMBOLS, (6, CONTEXT), generator=torch.Generator().manual_seed(0))
    out = generate(preferring_net(11), start, 50, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 50) and torch.equal(out[:, :CONTEXT], start)
    assert (out[:, CONTEXT:] == 11).float().mean() > 0.95
    # greedy roll-out is the argmax step by step
    net = random_net()
    out = generate(net, start, 14, generator=torch.Generator(), temperature=0.0)
    for t in range(CONTEXT, 14):
        assert torch.equal(out[:, t], candidate_goodness(net, out[:, t - CONTEXT:t]).argmax(1))


def test_sample_candidates_follows_softmax():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    draws = sample_candidates(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)
    hot = sample_candidates(logits, generator=torch.Generator().manual_seed(0), temperature=100.0)
    assert (torch.bincount(hot, minlength=3).float() / 20000 - 1 / 3).abs().max() < 0.02
    with pytest.raises(ValueError, match="temperature"):
        sample_candidates(logits, generator=torch.Generator(), temperature=-1.0)


# ----------------------------------------------------------------------------- sleep schedule
def test_phase_schedule():
    assert [phase_schedule(u, 0) for u in range(4)] == ["both"] * 4
    assert [phase_schedule(u, 1) for u in range(4)] == ["pos", "neg", "pos", "neg"]
    assert [phase_schedule(u, 3) for u in range(8)] == ["pos"] * 3 + ["neg"] * 3 + ["pos"] * 2
    with pytest.raises(ValueError):
        phase_schedule(0, -1)


def _run_steps(cfg, n):
    task = build_task(cfg, torch.device("cpu"))
    x = synthetic_strings(2)
    g = torch.Generator().manual_seed(0)
    losses = [task.step(x, torch.zeros(2, dtype=torch.long), g) for _ in range(n)]
    return task, losses


def test_sleep_phases_alternate_in_training():
    task, _ = _run_steps(ff_cfg(sleep_k=2), 7)
    assert task.extra["phase_log"] == ["pos", "pos", "neg", "neg", "pos", "pos", "neg"]
    task, _ = _run_steps(ff_cfg(sleep_k=0), 3)
    assert task.extra["phase_log"] == ["both"] * 3
    assert int(task.modules["clock"].updates) == 3


def test_phases_use_the_right_cases(monkeypatch):
    """A positive-only update makes no negatives (no model sampling at all); a negative-only
    update uses no positives: its loss is the negative term alone."""
    calls = []
    real = seq.teacher_negatives
    monkeypatch.setattr(seq, "teacher_negatives", lambda *a, **k: calls.append(1) or real(*a, **k))
    task, losses = _run_steps(ff_cfg(sleep_k=1), 2)
    assert calls == [1]  # only the second (negative) update sampled
    assert all(torch.isfinite(v) for v in losses)


def test_sleep_stop_epoch_disables_negatives():
    # train_subset=4, batch 2: 2 updates per epoch; negatives stop after epoch 1 (update 2 on).
    task, _ = _run_steps(ff_cfg(sleep_k=1, sleep_stop_epoch=1, train_subset=4), 6)
    assert task.extra["phase_log"] == ["pos", "neg", "pos", "pos", "pos", "pos"]
    task, _ = _run_steps(ff_cfg(sleep_k=0, sleep_stop_epoch=2, train_subset=4), 6)
    assert task.extra["phase_log"] == ["both"] * 4 + ["pos"] * 2


def test_bad_config_values():
    for kw, msg in [(dict(negatives="uniform"), "teacher or generated"),
                    (dict(negatives="generated", exclude_true=True), "exclude_true"),
                    (dict(sleep_k=-1), ">= 0"), (dict(dataset="mnist"), "dataset=aesop"),
                    (dict(eval_from_layer=2), "eval_from_layer")]:
        with pytest.raises(ConfigError, match=msg):
            build_task(ff_cfg(**kw), torch.device("cpu"))


# ----------------------------------------------------------------------------- training runs
def test_data_split(fake_aesop):
    d = seq.load_aesop_split(SequenceFFConfig(), None)
    assert d["x_train"].shape == (224, 100) and d["x_test"].shape == (24, 100)
    assert torch.equal(d["x_test"], fake_aesop[-24:])  # held out: the last 24 strings
    assert (d["y_train"] == 0).all() and (d["y_test"] == 0).all()


def test_real_split_when_available(monkeypatch):
    p = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (p / "aesop" / "aesop.txt").is_file():
        pytest.skip("aesop.txt not found beside the repository")
    monkeypatch.setattr("fflab.data.aesop._fetch", lambda *a: (_ for _ in ()).throw(OSError("offline")))
    d = seq.load_aesop_split(SequenceFFConfig(), str(p))
    assert d["x_train"].shape == (224, 100) and d["x_test"].shape == (24, 100)


@pytest.mark.parametrize("negatives", ["teacher", "generated"])
def test_ff_learns_synthetic_strings(tmp_path, fake_aesop, negatives):
    cfg = ff_cfg(negatives=negatives, hidden=(64, 64), epochs=3, batch_size=8, train_subset=64,
                 train_eval_size=32, lr=3e-3)
    res = fit(cfg, str(tmp_path / "r"), **QUIET)
    # chance is 29/30; the strings repeat a word, so the context gives the next character
    assert res["test_error_char"] < 0.3 and res["train_error_char"] < 0.3
    samples = runs.read_metrics(tmp_path / "r")
    assert [m["epoch"] for m in samples] == [1, 2, 3]
    assert (tmp_path / "r" / "samples.json").exists()


def test_same_seed_same_numbers_and_resume(tmp_path, fake_aesop):
    cfg = ff_cfg(sleep_k=1, train_subset=6, train_eval_size=6, negatives="generated")
    full = fit(cfg, str(tmp_path / "full"), **QUIET)
    again = fit(cfg, str(tmp_path / "again"), **QUIET)
    assert full["test_error_char"] == again["test_error_char"]
    fit(cfg, str(tmp_path / "part"), stop_after_epoch=1, **QUIET)
    resumed = fit(cfg, str(tmp_path / "part"), resume=True, **QUIET)
    a, b = runs.read_metrics(tmp_path / "full"), runs.read_metrics(tmp_path / "part")
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]  # the schedule continued
    assert resumed["test_error_char"] == full["test_error_char"]
    assert evaluate_run(str(tmp_path / "full"))["error_char"] == full["test_error_char"]


def test_bp_baseline(tmp_path, fake_aesop):
    cfg = apply_overrides(SequenceBPConfig(), dict(hidden=(64,), epochs=3, batch_size=8, train_subset=64,
                                                   train_eval_size=32, threads=1, lr=3e-3))
    res = fit(cfg, str(tmp_path / "bp"), **QUIET)
    assert res["test_error_char"] < 0.1
    assert evaluate_run(str(tmp_path / "bp"))["error_char"] == res["test_error_char"]


def test_configs_round_trip():
    for cfg in (ff_cfg(sleep_k=10, temperature=0.5), SequenceBPConfig()):
        assert from_dict(to_dict(cfg)) == cfg


# ----------------------------------------------------------------------------- recipes
RECIPES = ["seq-teacher", "seq-generated", "seq-bp", "seq-sleep-k0", "seq-sleep-k1", "seq-sleep-k10",
           "seq-sleep-k100", "seq-sleep-deprived"]


def test_recipes_registered_with_docs():
    rs = all_recipes()
    for name in RECIPES + ["ff-blocks", "ff-blocks-baseline", "fast-learning"]:
        assert name in rs, name
        assert "Command:" in rs[name].doc and "Runtime" in rs[name].doc, name
    full = {n: rs[n].config() for n in RECIPES}
    assert full["seq-sleep-k10"].sleep_k == 10 and full["seq-sleep-k100"].sleep_k == 100
    assert full["seq-sleep-deprived"].sleep_stop_epoch > 0
    assert full["seq-sleep-k1"].momentum >= 0.99
    assert rs["ff-blocks"].config().block_size > 0 and rs["ff-blocks-baseline"].config().block_size == 0
    assert rs["ff-blocks"].config().hidden == rs["ff-blocks-baseline"].config().hidden


@pytest.mark.parametrize("name", RECIPES)
def test_sequence_recipe_quick_mode_runs(tmp_path, fake_aesop, name):
    cfg = apply_overrides(all_recipes()[name].config(quick=True), dict(threads=1))
    res = fit(cfg, str(tmp_path / name), recipe=name, **QUIET)
    assert 0 <= res["test_error_char"] <= 1 and 0 <= res["train_error_char"] <= 1


@pytest.mark.parametrize("name", ["ff-blocks", "ff-blocks-baseline"])
def test_block_recipes_quick_mode_runs(tmp_path, tiny_mnist, name):
    cfg = apply_overrides(all_recipes()[name].config(quick=True), dict(threads=1))
    res = fit(cfg, str(tmp_path / name), recipe=name, **QUIET)
    assert 0 <= res["test_error_goodness"] <= 1


def test_fast_learning_recipe_quick_mode_runs(tmp_path, tiny_mnist):
    cfg = apply_overrides(all_recipes()["fast-learning"].config(quick=True), dict(threads=1))
    res = fit(cfg, str(tmp_path / "fast"), recipe="fast-learning", **QUIET)
    assert res["test_own_step_dev"] < 1e-9  # each case reaches S* exactly after its own step
    assert res["test_seen_dev_before"] > 1e-3
    assert (tmp_path / "fast" / "fast_learning.json").exists()


def test_results_table(tmp_path, fake_aesop):
    fit(ff_cfg(sleep_k=1, train_subset=4, train_eval_size=4), str(tmp_path / "k1"), recipe="seq-sleep-k1", **QUIET)
    bp = apply_overrides(SequenceBPConfig(), dict(hidden=(8,), epochs=1, train_subset=4, threads=1))
    fit(bp, str(tmp_path / "bp"), **QUIET)
    from fflab.report import results_table
    table = results_table([str(tmp_path / "k1"), str(tmp_path / "bp")]).splitlines()
    assert len(table) == 4 and table[0].startswith("| run |")
    assert "| k1 | seq-sleep-k1 | teacher | 1 |" in table[2] and "| bp | - | bp |" in table[3]
