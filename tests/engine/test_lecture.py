"""The lecture's rungs: each is the lecture's model (shapes, parameter counts worked out by hand),
trains through the normal Trainer and reopens from its checkpoint as the same class."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus import pseudo_shakespeare, write_corpus

from chargpt_tui.checkpoint import load_checkpoint, load_for_sampling
from chargpt_tui.data import split_data
from chargpt_tui.errors import ConfigError
from chargpt_tui.explain import surprise
from chargpt_tui.ladder import (
    CostEstimate,
    Ladder,
    RungResult,
    estimate_cost,
    fit_evaluations,
    lecture_train_config,
    rungs_through,
)
from chargpt_tui.lecture import (
    RUNG_NAMES,
    BigramLanguageModel,
    FeedForwardModel,
    Heads,
    LayerNormModel,
    MultiHeadModel,
    OneHeadModel,
    ResidualModel,
    build_model,
    rung_named,
)
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.presets import recipe_of
from chargpt_tui.run_setup import RunSetup, prepare_run
from chargpt_tui.sampling import SamplingParams, generate, make_generator, stream_tokens
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import Trainer

V, C, T = 65, 32, 8  # the lecture's vocabulary, width and context
LINEAR = C * C + C  # a 32 → 32 Linear with its bias
HEAD = 3 * C * (C // 4)  # key, query, value of one head of 8 (no biases)
EMBEDDINGS = V * C + T * C  # token and position tables
LM_HEAD = C * V + V
MLP = (C * 4 * C + 4 * C) + (4 * C * C + C)  # Linear(32, 128) and Linear(128, 32), biases
BLOCK = 4 * HEAD + LINEAR + MLP  # four heads, their projection, the MLP

HAND_COUNTS = {
    "bigram": V * V,  # 4,225
    "one-head": EMBEDDINGS + 3 * C * C + LM_HEAD,  # 7,553
    "multi-head": EMBEDDINGS + 4 * HEAD + LM_HEAD,  # 7,553: same weights, split in four
    "feedforward": EMBEDDINGS + 4 * HEAD + LINEAR + LM_HEAD,  # 8,609
    "residual": EMBEDDINGS + 3 * BLOCK + LM_HEAD,  # 41,921
    "layernorm": EMBEDDINGS + 3 * (BLOCK + 2 * 2 * C) + 2 * C + LM_HEAD,  # 42,369
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny: a second thread only waits for a core on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rung_model(name: str) -> GPTLanguageModel:
    torch.manual_seed(0)
    return build_model(rung_named(name).model_config(V), name)


@pytest.mark.parametrize("name", list(HAND_COUNTS))
def test_each_rung_has_the_lectures_parameter_count(name: str) -> None:
    assert rung_model(name).num_parameters() == HAND_COUNTS[name]


def test_the_hand_counts_are_the_lectures_printed_ones() -> None:
    assert list(HAND_COUNTS.values()) == [4225, 7553, 7553, 8609, 41921, 42369]


@pytest.mark.parametrize("name", list(HAND_COUNTS))
def test_each_rung_maps_a_batch_of_contexts_to_logits_and_a_loss(name: str) -> None:
    model = rung_model(name)
    idx = torch.randint(0, V, (3, T))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, T, V)
    assert loss is not None and loss.shape == ()
    # Untrained, the loss is near a uniform guess's (ln 65 ≈ 4.17), not already low.
    assert 3.0 < loss.item() < 8.0
    assert model(idx[:, :5])[0].shape == (3, 5, V)  # shorter contexts too


@pytest.mark.parametrize(("name", "layers", "heads"), [
    ("bigram", 0, 0), ("one-head", 1, 1), ("multi-head", 1, 4), ("feedforward", 1, 4),
    ("residual", 3, 4), ("layernorm", 3, 4)])
def test_attention_maps_are_causal_per_layer_and_head(name: str, layers: int, heads: int
                                                      ) -> None:
    maps = rung_model(name).attention_maps(torch.randint(0, V, (1, 6)))
    assert len(maps) == layers
    for weights in maps:
        assert weights.shape == (heads, 6, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(heads, 6))
        assert torch.all(weights.triu(diagonal=1) == 0)


def test_rungs_are_the_lectures_modules() -> None:
    """Where each rung differs from the one before, as the lecture builds it."""
    bigram, one, multi, ffwd, residual, norm = (rung_model(n) for n in HAND_COUNTS)
    assert isinstance(bigram, BigramLanguageModel) and bigram.token_embedding_table.weight.shape \
        == (V, V)
    assert isinstance(one, OneHeadModel) and one.sa_head.head_size == C
    assert isinstance(multi, MultiHeadModel)
    assert [h.head_size for h in multi.sa_heads.heads] == [8, 8, 8, 8]
    assert multi.sa_heads.proj is None  # no projection before the residual rung
    assert isinstance(ffwd, FeedForwardModel)
    assert [type(m).__name__ for m in ffwd.ffwd.net] == ["Linear", "ReLU"]
    assert isinstance(residual, ResidualModel) and len(residual.blocks) == 3
    block = residual.blocks[0]
    assert block.sa.proj is not None and block.sa.proj.bias is not None
    assert [type(m).__name__ for m in block.ffwd.net] == ["Linear", "ReLU", "Linear"]
    assert block.ffwd.net[0].out_features == 4 * C
    assert type(block.ln1).__name__ == "Identity" and type(residual.ln_f).__name__ == "Identity"
    assert isinstance(norm, LayerNormModel)
    assert type(norm.blocks[0].ln1).__name__ == "LayerNorm"
    assert type(norm.ln_f).__name__ == "LayerNorm"
    # key/query/value have no biases, as in the lecture
    assert all(head.key.bias is None for head in norm.blocks[0].sa.heads)


def test_residual_connections_make_a_block_start_near_the_identity() -> None:
    """What the residual rung adds: the input flows past each block unchanged plus a delta."""
    model = rung_model("residual")
    x = torch.randn(2, T, C)
    block = model.blocks[0]
    out, _ = block(x)
    attended, _ = block.sa(x)
    torch.testing.assert_close(out, x + attended + block.ffwd(x + attended))


def test_the_scaled_rung_is_the_projects_lecture_model() -> None:
    rung = rung_named("scaled")
    config = rung.model_config(V)
    with torch.device("meta"):
        model = build_model(config, "scaled")
    assert type(model) is GPTLanguageModel
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, config.dropout) \
        == (6, 6, 384, 256, 0.2)
    train = lecture_train_config(rung, 1337)
    assert (train.batch_size, train.learning_rate, train.max_iters) == (64, 3e-4, 5000)
    assert recipe_of({**config.to_dict(), **vars(train)}) == "lecture"


def test_the_lectures_training_settings() -> None:
    bigram = lecture_train_config(rung_named("bigram"), 1)
    assert (bigram.batch_size, bigram.learning_rate, bigram.max_iters, bigram.eval_interval,
            bigram.eval_iters) == (32, 1e-2, 3000, 300, 200)
    for name in RUNG_NAMES[1:6]:
        config = lecture_train_config(rung_named(name), 1)
        assert (config.batch_size, config.learning_rate, config.max_iters, config.eval_iters,
                rung_named(name).block_size) == (32, 1e-3, 5000, 200, 8)
        # torch.optim.AdamW's defaults and a constant rate, as in the lecture's loop
        assert (config.beta2, config.weight_decay, config.grad_clip, config.warmup_iters,
                config.final_lr) == (0.999, 0.01, 0.0, 0, config.learning_rate)


def test_rungs_through_stops_at_the_named_rung_and_refuses_unknown_ones() -> None:
    assert [r.name for r in rungs_through("multi-head")] == ["bigram", "one-head", "multi-head"]
    with pytest.raises(ConfigError, match="unknown rung 'transformer'"):
        rungs_through("transformer")


# -- through the project's training, checkpoints and samplers ---------------------------------


def rung_setup(name: str, folder: Path, steps: int = 6) -> RunSetup:
    corpus = write_corpus(folder.parent, lines=150)
    text = corpus.read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    rung = rung_named(name)
    config = lecture_train_config(rung, 3, max_iters=steps, eval_iters=2)
    return RunSetup(rung.model_config(tokenizer.vocab_size), config, tokenizer,
                    split_data(text, tokenizer, rung.block_size), str(corpus),
                    torch.device("cpu"), folder, preset="lecture", rung=name)


@pytest.fixture(scope="module")
def trained_rung(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rung") / "layernorm"
    result = Trainer(rung_setup("layernorm", folder)).run()
    assert result.state == "finished" and result.step == 6
    return folder


def test_a_rung_run_reopens_as_the_same_class(trained_rung: Path) -> None:
    payload = load_checkpoint(trained_rung)
    assert payload["rung"] == "layernorm"
    opened = load_for_sampling(trained_rung, "cpu")
    assert isinstance(opened.model, LayerNormModel)
    assert not opened.model.training
    trained = Trainer(rung_setup("layernorm", trained_rung.parent / "other")).model
    assert trained.state_dict().keys() == opened.model.state_dict().keys()


def test_a_rung_samples_like_the_lectures_generate(trained_rung: Path) -> None:
    """No KV cache: the stream re-runs the window, and gives exactly the reference sampler's
    tokens (the lecture's generate) past the context window too."""
    model = load_for_sampling(trained_rung, "cpu").model
    params = SamplingParams(max_new_tokens=20, temperature=1.0, seed=5)
    streamed = list(stream_tokens(model, [0, 1, 2], params))
    reference = generate(model, torch.tensor([[0, 1, 2]]), 20,
                         generator=make_generator(5, "cpu"))[0, 3:].tolist()
    assert streamed == reference


def test_explain_scores_a_rung_model(trained_rung: Path) -> None:
    opened = load_for_sampling(trained_rung, "cpu")
    ids = opened.tokenizer.encode("KING:\nThe lord shall come.")
    result = surprise(opened.model, opened.tokenizer, ids)
    assert all(n is not None and n > 0 for n in result.nats[1:])


def test_a_stopped_rung_resumes_as_its_rung(trained_rung: Path) -> None:
    setup = prepare_run(resume=trained_rung, overrides={"max_iters": 8})
    assert setup.rung == "layernorm"
    trainer = Trainer(setup)
    assert isinstance(trainer.model, LayerNormModel) and trainer.step == 6
    assert trainer.run().step == 8


def test_a_checkpoint_naming_an_unknown_rung_is_refused(trained_rung: Path, tmp_path: Path
                                                        ) -> None:
    payload = load_checkpoint(trained_rung)
    payload["rung"] = "transformer"
    torch.save(payload, tmp_path / "ckpt.pt")
    with pytest.raises(ConfigError, match="unknown rung"):
        load_for_sampling(tmp_path, "cpu")


# -- the ladder --------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[RungResult] = []

    def rung_starting(self, rung, setup, trainer, estimate) -> None:  # type: ignore[no-untyped-def]
        self.started.append(rung.name)

    def rung_finished(self, result: RungResult) -> None:
        self.finished.append(result)


def tiny_ladder(folder: Path, through: str = "multi-head", **options: object) -> Ladder:
    text = pseudo_shakespeare(lines=150)
    tokenizer = CharTokenizer.from_text(text)
    return Ladder(through=through, tokenizer=tokenizer, data=split_data(text, tokenizer, 8),
                  data_name="generated", device=torch.device("cpu"), out_dir=folder,
                  max_iters=4, eval_iters=2, **options)  # type: ignore[arg-type]


def test_the_ladder_trains_each_rung_into_its_own_run_folder(tmp_path: Path) -> None:
    ladder = tiny_ladder(tmp_path / "ladder")
    listener = Recorder()
    results = ladder.run(listener)
    assert listener.started == ["bigram", "one-head", "multi-head"]
    assert [r.rung for r in results] == ["bigram", "one-head", "multi-head"]
    for result in results:
        assert result.state == "finished" and result.steps == 4
        assert load_checkpoint(result.run_dir)["rung"] == result.rung
        assert len(result.sample) == 200
        assert result.lecture_val_loss == rung_named(result.rung).lecture_val_loss
    table = (tmp_path / "ladder" / "ladder.json").read_text()
    assert '"multi-head"' in table and '"stopped": null' in table


def test_a_stop_request_ends_the_rung_in_training_and_starts_no_other(tmp_path: Path) -> None:
    ladder = tiny_ladder(tmp_path / "ladder")

    class StopDuringSecond(Recorder):
        def rung_starting(self, rung, setup, trainer, estimate) -> None:  # type: ignore[no-untyped-def]
            super().rung_starting(rung, setup, trainer, estimate)
            if rung.name == "one-head":
                ladder.stop("received SIGINT", 130)

    results = ladder.run(StopDuringSecond())
    assert [(r.rung, r.state) for r in results] == [("bigram", "finished"),
                                                     ("one-head", "stopped")]
    assert ladder.stopped is not None and ladder.stopped["during"] == "one-head"
    assert ladder.exit_code == 130
    assert load_checkpoint(results[0].run_dir)["step"] == 4  # the finished rung is intact
    assert not (tmp_path / "ladder" / "multi-head").exists()


def test_a_time_budget_is_shared_by_cost_and_unused_time_passes_on(tmp_path: Path) -> None:
    ladder = tiny_ladder(tmp_path / "ladder", through="layernorm", time_budget=100.0)
    ladder._budget_end = 1100.0
    first = ladder.rung_budget(0, now=1000.0)
    assert first == pytest.approx(100 * 1.0 / 34.7)  # bigram's share of the six costs
    # the bigram ended early: the rest of the budget is shared by the rungs still to come
    assert ladder.rung_budget(1, now=1001.0) == pytest.approx(99 * 2.7 / 33.7)
    scaled = tiny_ladder(tmp_path / "other", through="scaled", time_budget=100.0)
    scaled._budget_end = 1100.0
    assert scaled.rung_budget(6, now=1050.0) == pytest.approx(50.0)  # last: all that is left
    assert scaled.rung_budget(0, now=1000.0) == pytest.approx(100 * 1.0 / 69.4)


def test_a_scaled_budget_caps_the_scaled_rung_alone(tmp_path: Path) -> None:
    ladder = tiny_ladder(tmp_path / "ladder", through="scaled", scaled_budget=600.0)
    assert ladder.rung_budget(0, now=0.0) is None
    assert ladder.rung_budget(6, now=0.0) == 600.0


def test_the_ladder_refuses_to_overwrite_a_finished_rung(tmp_path: Path) -> None:
    tiny_ladder(tmp_path / "ladder", through="bigram").run(Recorder())
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        tiny_ladder(tmp_path / "ladder", through="bigram")


def test_a_rungs_cost_is_measured_and_a_short_budget_evaluates_on_fewer_batches() -> None:
    rung = rung_named("one-head")
    estimate = estimate_cost(rung, V, torch.device("cpu"), eval_iters=200, max_iters=5000,
                             timed_steps=1)
    assert estimate.step_seconds > 0 and estimate.eval_seconds > 0
    # 5000 steps and 11 evaluations (every 500 steps, and at step 0)
    assert estimate.total_seconds == pytest.approx(5000 * estimate.step_seconds
                                                   + 11 * estimate.eval_seconds)
    slow = CostEstimate(step_seconds=5.0, eval_seconds=600.0, total_seconds=0.0, eval_iters=200)
    fitted = fit_evaluations(slow, budget=600.0)  # 200 batches would take the whole budget
    assert fitted.eval_iters == 10 and fitted.eval_seconds == pytest.approx(30.0)
    assert fit_evaluations(slow, budget=10.0).eval_iters == 5  # never fewer than 5
    assert fit_evaluations(slow, budget=10**6).eval_iters == 200  # never more than asked


@pytest.mark.parametrize("name", ["multi-head", "feedforward", "residual", "layernorm"])
def test_all_heads_at_once_computes_what_the_loop_over_heads_does(name: str) -> None:
    rung = rung_named(name)
    config = rung.model_config(V)
    torch.manual_seed(0)
    at_once = rung.model(config)
    looped = rung.model(replace(config, attention="heads"))  # the per-Head loop, as taught
    looped.load_state_dict(at_once.state_dict())
    idx, targets = torch.randint(0, V, (4, T)), torch.randint(0, V, (4, T))
    losses = []
    for model in (at_once, looped):
        _, loss = model(idx, targets)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (param, a), b in zip(at_once.named_parameters(), looped.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, param
        torch.testing.assert_close(a.grad, b.grad, msg=param)
    heads = [m for m in at_once.modules() if isinstance(m, Heads)]
    assert heads and all(h.one_pass for h in heads)  # the rung trains this way by default
    # the views still see every head's weights, from the loop
    assert [w.shape for w in at_once.attention_maps(idx[:1])] == [
        w.shape for w in looped.attention_maps(idx[:1])]
