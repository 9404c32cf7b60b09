"""`chargpt-tui bench`: runs end to end (tiny mode) and reports every case and target.

No timing is asserted here — speed targets live in the bench's own output. These tests check
that the bench measures what it claims: every case, every target, numbers that are numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from chargpt_tui.bench.app_cases import TrainingWindow
from chargpt_tui.bench.engine_cases import (
    BareLoop,
    flops_per_token,
    known_peak_flops,
    steps_per_second,
)
from chargpt_tui.bench.harness import (
    BenchContext,
    Measurement,
    Variant,
    alternate,
    bracketed,
    make_plan,
    paired_ratios,
)
from chargpt_tui.bench.runner import CASES, print_report
from chargpt_tui.cli import app
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.train import Trainer
from tests.conftest import once_per_session

EXPECTED_TARGETS = {
    "fused_vs_heads_cpu", "kv_cache_inside_block", "kv_cache_past_block", "beam4_cost",
    "ttfc_idle", "ttfc_training", "ui_cost", "answer_while_training", "training_recovers",
    "help_startup",
}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    def run() -> dict:
        result = CliRunner().invoke(app, ["bench", "--tiny", "--json"])
        assert result.exit_code == 0, result.output
        report: dict = json.loads(result.stdout)
        return report

    report: dict = once_per_session(tmp_path_factory, "tiny-bench", run)
    return report


@pytest.mark.slow  # the whole tiny bench, once a module
def test_bench_reports_every_case_with_numeric_medians_and_spreads(tiny_report: dict) -> None:
    assert set(tiny_report["cases"]) == set(CASES)
    assert [case["number"] for case in tiny_report["cases"].values()] == [
        "1", "2", "3", "4", "5", "6", "7"]
    for key, case in tiny_report["cases"].items():
        assert case["rows"], key
        for row in case["rows"]:
            values = (row["median"], row["spread"], row["min"], row["max"])
            assert all(isinstance(v, float) and math.isfinite(v) for v in values), row
            assert row["min"] <= row["median"] <= row["max"]
            assert row["spread"] >= 0
            # tiny mode: 2 alternated repeats each; the slow sides of sampling and beam search
            # once, between two runs of the fast side (bracketed), and so their ratios
            costly = (key == "sampling" and "no cache" in row["label"]) or (
                key == "beam_search" and row["label"] != "greedy")
            assert len(row["samples"]) == (1 if costly else 2), row
    training = tiny_report["cases"]["training"]
    labels = {row["label"] for row in training["rows"]}
    assert {"tiny-cpu: fused eager", "tiny-cpu: heads eager", "tiny-cpu: fused / heads",
            "tiny-cpu: fused bare loop", "tiny-cpu: engine / bare loop",
            "tiny-gpu: fused eager", "tiny-gpu: heads eager"} <= labels
    # Compile is not measured in tiny mode, and the report says so instead of hiding it.
    assert any("fused compiled" in skipped and "tiny" in skipped
               for skipped in training["skipped"])
    assert all(row["mfu"] is None for row in training["rows"] if row["unit"] == "tokens/s")


@pytest.mark.slow
def test_ui_cost_runs_the_app_with_prompts_and_compares_it_to_the_engine(
        tiny_report: dict) -> None:
    rows = {row["label"]: row for row in tiny_report["cases"]["ui_cost"]["rows"]}
    engine = rows["engine alone (no app)"]
    with_app = rows["with the app, outside prompts"]
    ratio = rows["with the app / engine alone (outside prompts)"]
    assert engine["unit"] == with_app["unit"] == "tokens/s"
    assert engine["median"] > 0 and with_app["median"] > 0
    assert ratio["samples"] == pytest.approx(
        [a / e for a, e in zip(with_app["samples"], engine["samples"])])
    # Prompts went through the app's prompt line and parked training while they were answered.
    held = rows["  time training was held"]
    assert all(count >= 1 for count in held["prompts"])
    assert all(0 < share < 1 for share in held["samples"])
    lost = rows["training lost to prompts (1 − whole / outside)"]
    assert all(share < 1 for share in lost["samples"])
    target = next(t for t in tiny_report["targets"] if t["key"] == "ui_cost")
    assert target["value"] == ratio["median"] and target["goal"] == 0.95


@pytest.mark.slow
def test_startup_reports_the_app_first_paint_next_to_help(tiny_report: dict) -> None:
    rows = {row["label"]: row for row in tiny_report["cases"]["startup"]["rows"]}
    help_row = rows["chargpt-tui --help"]
    paint = rows["app first paint (7b): process start → first frame"]
    imports = rows["  of which Python start-up and imports"]
    assert help_row["unit"] == paint["unit"] == imports["unit"] == "s"
    assert all(0 < i < p for i, p in zip(imports["samples"], paint["samples"]))
    assert not tiny_report["cases"]["startup"]["skipped"]


@pytest.mark.slow  # a fresh interpreter
def test_bench_module_does_not_import_textual() -> None:
    check = ("import sys, chargpt_tui.bench.runner; "
             "sys.exit('textual' in sys.modules or 'chargpt_tui.tui.app' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check], timeout=60).returncode == 0


def test_training_window_skips_held_steps_and_merges_overlapping_holds() -> None:
    # Steps end every second from t=0 to t=10; training is held over [3.5, 5.5] and [5, 6].
    window = TrainingWindow([float(t) for t in range(11)], start=0.0, end=10.0,
                            tokens_per_step=100, holds=[[3.5, 5.5], [5.0, 6.0]])
    # Steps (3,4], (4,5], (5,6] touch a hold: the other 7 took 1 s each.
    assert window.steady_rate() == pytest.approx(100.0)
    assert window.overall_rate() == pytest.approx(10 * 100 / 10)
    assert window.held_share() == pytest.approx(2.5 / 10)


def test_steps_per_second_times_whole_steps_inside_the_window() -> None:
    # Steps end every 0.125 s (8/s), the first at 0.1: a 1 s window holds 8 of them.
    ends = [0.1 + 0.125 * n for n in range(40)]
    assert steps_per_second(ends, 1.0, 2.0) == pytest.approx(8.0)
    assert steps_per_second(ends, 1.05, 2.05) == pytest.approx(8.0)  # where the edges fall
    # A slow step inside the window (a 0.5 s stall) shows as a slower pace.
    stalled = [*ends[:12], *(t + 0.375 for t in ends[12:])]
    assert steps_per_second(stalled, 1.0, 2.0) < 7.0
    # Training that resumed at the window's start: its slow first step counts too.
    resumed = [1.5 + 0.125 * n for n in range(8)]  # the first step took 0.5 s
    assert steps_per_second(resumed, 1.0, 2.5, resumed_at_start=True) == pytest.approx(8 / 1.375)
    assert steps_per_second(resumed, 1.0, 2.5) == pytest.approx(8.0)
    assert math.isnan(steps_per_second(ends, 10.0, 11.0))  # no step ended there
    assert math.isnan(steps_per_second(ends, 1.0, 1.2))  # one step: nothing to time


@pytest.mark.slow
def test_bench_reports_every_target_with_a_verdict(tiny_report: dict) -> None:
    targets = {t["key"]: t for t in tiny_report["targets"]}
    assert set(targets) == EXPECTED_TARGETS
    for target in targets.values():
        assert isinstance(target["value"], float) and math.isfinite(target["value"]), target
        assert target["passed"] is (target["value"] >= target["goal"]
                                    if target["comparison"] == ">=" else
                                    target["value"] <= target["goal"])


@pytest.mark.slow
def test_bench_reports_the_machine(tiny_report: dict) -> None:
    machine = tiny_report["machine"]
    assert machine["device"] == "cpu"
    assert machine["torch"] == str(torch.__version__)
    assert machine["threads"] == torch.get_num_threads()
    assert tiny_report["notes"]  # tiny mode says its numbers mean nothing


@pytest.mark.slow
def test_bench_table_shows_every_case_and_verdict(tiny_report: dict) -> None:
    console = Console(record=True, width=160)
    print_report(tiny_report, console)
    text = console.export_text()
    for case in tiny_report["cases"].values():
        assert case["title"] in text
    assert text.count("PASS") + text.count("FAIL") == len(EXPECTED_TARGETS)
    assert "skipped" in text


@pytest.mark.parametrize("options", [["--device", "nonsense"], ["--threads", "0"],
                                     ["--case", "nonsense"]])
def test_bench_bad_options_fail_in_one_line(options: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "--tiny", *options])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_alternate_warms_up_then_reverses_the_order_each_repeat() -> None:
    calls: list[str] = []

    def variant(name: str) -> Variant:
        return Variant(name, lambda: calls.append(name) or float(len(calls)),
                       lambda: calls.append(f"warm {name}"))

    samples = alternate([variant("a"), variant("b"), variant("c")], repeats=3)
    assert calls == ["warm a", "warm b", "warm c", "a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert samples == {"a": [4.0, 9.0, 10.0], "b": [5.0, 8.0, 11.0], "c": [6.0, 7.0, 12.0]}


def test_bracketed_runs_each_costly_variant_once_between_two_cheap_runs() -> None:
    order: list[str] = []

    def variant(label: str, value: float) -> Variant:
        return Variant(label, lambda: order.append(label) or value,
                       lambda: order.append(f"warm {label}"))

    samples = bracketed(variant("a", 10.0), [variant("b", 2.0), variant("c", 4.0)])
    assert order == ["warm a", "warm b", "warm c", "a", "b", "c", "a"]
    assert samples == {"a": [10.0, 10.0], "b": [2.0], "c": [4.0]}
    # each costly run against the mean of the cheap runs around it, either way round
    assert paired_ratios([9.0, 11.0], [2.0]) == [5.0]
    assert paired_ratios([2.0], [9.0, 11.0]) == [0.2]
    assert paired_ratios([4.0, 6.0], [2.0, 3.0]) == [2.0, 2.0]  # alternated: pair by pair
    assert make_plan("quick", torch.device("cpu")).bracket
    assert not make_plan("full", torch.device("cpu")).bracket


def test_measurement_median_and_spread() -> None:
    measurement = Measurement("chars/s", [90.0, 100.0, 130.0])
    assert measurement.median == 100.0
    assert measurement.spread == pytest.approx(0.2)  # (130 - 90) / 2 / 100
    assert Measurement("s", [2.0]).spread == 0.0


def test_flops_per_token_counts_every_matmul_weight_of_the_real_model() -> None:
    config = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
    model = GPTLanguageModel(config)
    matmul_weights = sum(m.weight.numel() for m in model.modules()
                         if isinstance(m, torch.nn.Linear))
    attention = 12 * 6 * 6 * 64 * 256
    assert flops_per_token(config) == 6 * matmul_weights + attention


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10", 125e12), ("NVIDIA A10G", None),
    ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("Tesla T4", None),
])
def test_known_gpu_peaks_match_by_name(name: str, peak: float | None) -> None:
    assert known_peak_flops(name) == peak


@pytest.mark.slow
def test_the_bare_loop_trains_the_engines_model_from_the_same_weights(tmp_path) -> None:
    """The engine/bare-loop ratio is only fair if both train the same model from the same start
    with the same optimizer settings, and the bare loop really takes optimizer steps."""
    ctx = BenchContext(make_plan("tiny", torch.device("cpu")), torch.device("cpu"), tmp_path)
    bare = BareLoop(ctx.run_setup(ctx.plan.cpu))
    engine = Trainer(ctx.run_setup(ctx.plan.cpu))
    assert type(bare.model) is type(engine.model)
    engine_start = engine.model.state_dict()
    for name, tensor in bare.model.state_dict().items():
        assert torch.equal(tensor, engine_start[name]), name

    def settings(optimizer: torch.optim.Optimizer) -> list[dict]:
        return [{k: v for k, v in group.items() if k not in ("params", "lr")} | {
            "sizes": [p.numel() for p in group["params"]]} for group in optimizer.param_groups]

    assert settings(bare.optimizer) == settings(engine.optimizer)
    for _ in range(3):
        bare.train_step()
    moved = [not torch.equal(tensor, engine_start[name])
             for name, tensor in bare.model.state_dict().items() if "mask" not in name]
    assert all(moved)
    assert all(state["step"] == 3 for state in bare.optimizer.state.values())
