"""The fast recipe: each part against its definition, and every feature working with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from chargpt_tui.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_for_sampling,
    save_checkpoint,
)
from chargpt_tui.durations import parse_duration
from chargpt_tui.events import EvalDone, EventBus, Notice, StepDone
from chargpt_tui.kv_cache import KVCache
from chargpt_tui.model import (
    CausalSelfAttention,
    GPTConfig,
    GPTLanguageModel,
    Rotary,
    attention_mask,
)
from chargpt_tui.optim import Muon, MuonWithAdamW, orthogonalize
from chargpt_tui.presets import RECIPES, recipe_of
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.sampling import SamplingParams, beam_search, generate, stream_tokens
from chargpt_tui.train import (
    TimeBudget,
    TrainConfig,
    Trainer,
    configure_optimizer,
    get_lr,
)
from tests.conftest import TINY

# The model parts of the fast recipe (the rest of it is the optimizer and the schedule).
FAST_MODEL = {k: v for k, v in RECIPES["fast"].items() if k in GPTConfig.__dataclass_fields__}


def fast_model(vocab: int = 13, block: int = 8, seed: int = 0, layers: int = 2) -> GPTLanguageModel:
    """A random tiny model with the fast recipe's parts, in float64, with sharp outputs (larger
    random projections and head than training's init, so the tests see more than noise)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=2, n_embd=16,
                       **FAST_MODEL)
    model = GPTLanguageModel(config).double().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("proj.weight", "net.2.weight", "lm_head.weight")):
                param.normal_(0, 0.5 if "lm_head" in name else 0.1)
    return model


# -- the parts, against their definitions ------------------------------------------------------


def test_rope_makes_attention_scores_depend_only_on_the_distance() -> None:
    rotary = Rotary(head_size=8, block_size=64).double()
    q, k = torch.randn(2, 1, 1, 1, 8, dtype=torch.float64)

    def score(i: int, j: int) -> float:
        return float((rotary(q, start=i) * rotary(k, start=j)).sum())

    # (angles are float32, as in training: equal to ~1e-7)
    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-5)  # same distance 3
    assert score(5, 2) == pytest.approx(score(200, 197), abs=1e-5)  # past the table too
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-2)  # another distance differs
    # a rotation: lengths are kept
    assert float(rotary(q, start=11).norm()) == pytest.approx(float(q.norm()), abs=1e-6)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys() -> None:
    """With queries and keys normalised, scaling their projections changes nothing."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, qk_norm=True)
    attention = CausalSelfAttention(config).double()
    with torch.no_grad():  # large queries and keys: the norm's epsilon is then negligible
        attention.qkv.weight[:16] *= 10.0
    x = torch.randn(2, 8, 8, dtype=torch.float64)
    before, _ = attention(x)
    with torch.no_grad():
        attention.qkv.weight[:16] *= 7.0  # the query and key rows
    after, _ = attention(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-3)  # epsilon's share only
    # ...while without QK-norm the same scaling changes the output
    plain = CausalSelfAttention(GPTConfig(**{**config.to_dict(), "qk_norm": False})).double()
    plain.load_state_dict(attention.state_dict())
    with torch.no_grad():
        plain.qkv.weight[:16] /= 70.0
    assert not torch.allclose(plain(x)[0], after)


def test_sliding_window_mask() -> None:
    mask = attention_mask(queries=3, keys=6, window=2, device=torch.device("cpu"))
    # queries are positions 3, 4, 5; each sees itself and the one before
    expected = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]])
    assert torch.equal(mask, expected.bool())


def test_newton_schulz_orthogonalises() -> None:
    torch.manual_seed(0)
    for shape in ((32, 96), (96, 32)):
        rank = min(shape)
        left, _ = torch.linalg.qr(torch.randn(shape[0], rank))
        right, _ = torch.linalg.qr(torch.randn(shape[1], rank))
        gradient = left @ torch.diag(torch.logspace(-1, 1, rank)) @ right.T  # condition 100
        singular = torch.linalg.svdvals(orthogonalize(gradient))
        raw = torch.linalg.svdvals(gradient)
        assert raw.max() / raw.min() > 99  # a badly conditioned update...
        assert singular.min() > 0.5 and singular.max() < 1.3  # ...comes out near-orthogonal


def test_muon_steps_along_the_orthogonalised_momentum() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 24))
    start = weight.detach().clone()
    optimizer = Muon([weight], lr=0.1, momentum=0.0, nesterov=False)
    weight.grad = torch.randn(8, 24)
    optimizer.step()
    torch.testing.assert_close((start - weight.detach()) / 0.1, orthogonalize(weight.grad))
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.randn(4))])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest() -> None:
    model = GPTLanguageModel(GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2,
                                       n_embd=8, **FAST_MODEL))
    optimizer = configure_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert isinstance(optimizer, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters()
                    if n.startswith("blocks.") and p.dim() == 2}
    assert adamw == set(names.values()) - muon
    assert {"token_embedding_table.weight", "lm_head.weight"} <= adamw


def test_wsd_schedule_holds_then_cools_down_linearly() -> None:
    config = TrainConfig(max_iters=110, warmup_iters=10, learning_rate=1.0, schedule="wsd",
                         cooldown_frac=0.5, min_lr=0.0)
    lrs = [get_lr(step, config) for step in range(111)]
    assert lrs[0] < lrs[9] < 1.0
    assert lrs[10:60] == [1.0] * 50  # stable
    assert lrs[85] == pytest.approx(0.5)  # halfway down the cooldown
    assert lrs[110] == 0.0
    # a time-budgeted run: progress decides, the step count does not
    assert get_lr(50, config, progress=0.75) == pytest.approx(0.5)


def test_time_budget_counts_from_the_start_and_gives_paused_time_back() -> None:
    clock = [100.0]
    budget = TimeBudget(60.0, started=90.0, clock=lambda: clock[0])  # started 10 s earlier
    budget.start_training(evaluation_seconds=2.0)  # reserve 3.5 s for the last evaluation
    clock[0] = 100.0 + (150.0 - 3.5 - 100.0) / 2
    assert budget.progress() == pytest.approx(0.5)
    budget.give_back(20.0)  # paused for 20 s
    clock[0] += 20.0
    assert budget.progress() == pytest.approx(0.5)
    clock[0] = 1000.0
    assert budget.progress() == 1.0
    assert parse_duration("5m") == 300 and parse_duration("1m30s") == 90
    assert parse_duration("45") == 45


# -- every feature with the fast recipe ----------------------------------------------------------


def band_generate(model: GPTLanguageModel, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache: the whole history through the model every step."""
    idx = torch.tensor([prompt])
    for _ in range(n):
        logits, _ = model(idx)
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx[0, len(prompt):].tolist()


def test_rope_kv_cache_equals_no_cache_generation_inside_and_past_the_block() -> None:
    model = fast_model(block=8)
    prompt = [1, 2, 3]
    params = SamplingParams(max_new_tokens=30, temperature=0.0)  # 33 positions: 4 blocks
    cached = list(stream_tokens(model, prompt, params))
    assert cached == band_generate(model, prompt, 30)
    assert len(set(cached)) > 2
    # and the lecture's generate (which takes the whole history for a rotary model) agrees
    generated = generate(model, torch.tensor([prompt]), 30, temperature=0.0)
    assert generated[0, 3:].tolist() == cached


def test_rope_cache_logits_equal_the_sliding_window_forward_at_every_position() -> None:
    model = fast_model(block=6)
    idx = torch.randint(0, 13, (2, 20))
    full, _ = model(idx)  # 20 positions with a 6-wide window
    cache = KVCache(model.config, batch_size=2, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(model.forward_cached(idx[:, :4], cache), full[:, 3])
    for t in range(4, 20):
        torch.testing.assert_close(model.forward_cached(idx[:, t : t + 1], cache), full[:, t])
    assert cache.length == 6 and cache.seen == 20


def test_beam_search_and_attention_maps_work_with_the_fast_recipe() -> None:
    model = fast_model(block=8)
    *_, state = beam_search(model, [1, 2], SamplingParams(max_new_tokens=12, beam_width=3))
    assert state.done and len(state.best) == 12 and state.scores[0] > float("-inf")
    maps = model.attention_maps(torch.tensor([[1, 2, 3, 4, 5]]))
    assert len(maps) == 2 and maps[0].shape == (2, 5, 5)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 5, dtype=torch.float64))
    assert torch.all(maps[0].triu(1) == 0)  # causal


def test_recipe_names_and_old_checkpoints(tmp_path: Path) -> None:
    assert recipe_of(RECIPES["fast"]) == "fast"
    assert recipe_of({}) == "lecture"  # a config from before the recipes existed
    assert recipe_of({**RECIPES["fast"], "rope": False}) == "custom"
    # a lecture checkpoint written before these fields existed still loads
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4)
    model = GPTLanguageModel(config)
    old_config = {k: v for k, v in config.to_dict().items() if k not in ("rope", "qk_norm")}
    save_checkpoint({"format_version": FORMAT_VERSION, "model_config": old_config, "vocab": "abc",
                     "model": model.state_dict(), "step": 5}, tmp_path / "old.pt")
    loaded = load_for_sampling(tmp_path / "old.pt", device="cpu").model
    assert not loaded.config.rope and not loaded.config.qk_norm
    torch.testing.assert_close(loaded(torch.tensor([[0, 1, 2]]))[0],
                               model.eval()(torch.tensor([[0, 1, 2]]))[0])


def run(corpus_file: Path, out: Path, **overrides: object) -> tuple[Trainer, list]:
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    setup = prepare_run(data=str(corpus_file), preset="tiny", out=out,
                        overrides={**TINY, "recipe": "fast", **overrides}, device="cpu")
    return Trainer(setup, bus), events


def test_the_fast_recipe_trains_and_resumes_bitwise(corpus_file: Path, tmp_path: Path) -> None:
    """10 steps + save + resume for 10 more ≡ 20 straight steps, Muon's momentum included."""
    straight, _ = run(corpus_file, tmp_path / "straight", max_iters=20, dropout=0.1)
    result = straight.run()
    assert result.state == "finished"
    first, _ = run(corpus_file, tmp_path / "split", max_iters=10, lr_decay_iters=20, dropout=0.1)
    first.run()
    setup = prepare_run(resume=tmp_path / "split", overrides={"max_iters": 20},
                        data=str(corpus_file), device="cpu")
    Trainer(setup).run()
    a, b = load_checkpoint(tmp_path / "split"), load_checkpoint(tmp_path / "straight")
    assert a["model_config"]["rope"] and set(a["optimizer"]) == {"muon", "adamw"}
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name
    for part in ("muon", "adamw"):
        for index, state in b["optimizer"][part]["state"].items():
            for key, value in state.items():
                assert torch.equal(a["optimizer"][part]["state"][index][key], value), (part, key)


def test_patience_stops_at_the_right_evaluation_with_the_best_weights_in_hand(
        corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui import train

    curve = iter([3.0, 2.0, 2.5, 2.1, 2.6, 1.0])  # best at step 10, then two worse evaluations
    monkeypatch.setattr(train, "estimate_loss", lambda *a, **k: {"train": 1.0, "val": next(curve)})
    trainer, events = run(corpus_file, tmp_path / "run", max_iters=100, eval_interval=10,
                          patience=2)
    result = trainer.run()
    assert [e.step for e in events if isinstance(e, EvalDone)] == [0, 10, 20, 30]
    assert result.state == "finished" and result.step == 30 and "early stop" in result.reason
    assert (result.best_val_loss, result.best_step) == (2.0, 10)
    best = load_checkpoint(tmp_path / "run", prefer_best=True)
    assert best["step"] == 10
    for name, tensor in trainer.model.state_dict().items():  # the model in memory is step 10's
        assert torch.equal(tensor, best["model"][name]), name
    latest = load_checkpoint(tmp_path / "run")
    assert latest["step"] == 30  # the resumable state stays the last one
    assert any("best weights" in e.message and "step 10" in e.message
               for e in events if isinstance(e, Notice))
    snapshot, _ = trainer.snapshot()  # what a prompt pane samples from
    torch.testing.assert_close(snapshot.lm_head.weight, best["model"]["lm_head.weight"])


def test_a_time_budget_ends_the_run_after_its_cooldown(corpus_file: Path, tmp_path: Path) -> None:
    trainer, events = run(corpus_file, tmp_path / "run", time_budget=2.0, eval_interval=10**6,
                          min_lr=1e-4)
    assert trainer.tconf.max_iters == 10**9  # the clock, not a step count, ends it
    # A deterministic clock: every reading advances 10 ms (about 5 per step), whatever the load.
    ticks = iter(range(10**9))
    trainer.clock = lambda: trainer.setup.started + 0.01 * next(ticks)
    result = trainer.run()
    assert result.state == "finished" and "time budget" in result.reason
    steps = [e for e in events if isinstance(e, StepDone)]
    assert len(steps) > 10
    assert steps[len(steps) // 4].lr == pytest.approx(trainer.tconf.learning_rate)  # stable
    assert steps[-1].lr < 0.2 * trainer.tconf.learning_rate  # cooled down by the end
    evals = [e for e in events if isinstance(e, EvalDone)]
    assert evals[-1].step == result.step  # measured at the end, between eval intervals


def test_bad_recipe_options_are_one_line_errors(corpus_file: Path, tmp_path: Path) -> None:
    from chargpt_tui.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown recipe"):
        prepare_run(data=str(corpus_file), overrides={"recipe": "fastest"}, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="per-head"):
        GPTConfig(rope=True, attention="heads")
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("five minutes")
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="sgd")


def test_cross_entropy_of_the_fast_model_is_the_plain_definition() -> None:
    model = fast_model()
    idx, targets = torch.randint(0, 13, (2, 8)), torch.randint(0, 13, (2, 8))
    logits, loss = model(idx, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 13),
                                                        targets.reshape(-1)).item())
