"""The GPU check (benchmarks/gpu_check.py): its arithmetic, its step machinery (a failing or
late step is recorded and the run goes on), and one whole ``--device cpu --smoke`` run."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import once_per_session

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gc = load_script()


# -- arithmetic ----------------------------------------------------------------------------------


def test_flops_per_token_of_the_gpu_shape_by_hand() -> None:
    # 6 × (12·6·384² + 384·65) + 12·6·6·64·256 = 6 × 10,641,792 + 7,077,888
    assert gc.flops_per_token(6, 6, 384, 256, 65) == 63_850_752 + 7_077_888
    # The attention term grows with the context, the weights' term does not.
    longer = gc.flops_per_token(6, 6, 384, 512, 65) - gc.flops_per_token(6, 6, 384, 256, 65)
    assert longer == 7_077_888


def test_mfu_against_the_h200_peak() -> None:
    peak = gc.peak_flops("NVIDIA H200")
    assert peak == 989e12
    # The 2026-11 H200 run: 1.35M tokens/s at the gpu shape is about a tenth of the peak.
    assert gc.mfu(1.35e6, gc.flops_per_token(6, 6, 384, 256, 65), peak) == pytest.approx(
        1.35e6 * 70_928_640 / 989e12)
    assert gc.mfu(1.35e6, 7e7, None) is None


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("x86_64", None)])
def test_peak_by_device_name(name: str, peak: float | None) -> None:
    assert gc.peak_flops(name) == peak


def records(step_seconds: list[float], evals: dict[int, float], start: float = 100.0
            ) -> list[dict[str, Any]]:
    """A run's metrics: one StepDone per step (``step_seconds[i]`` for step i + 1), an
    EvalDone after the steps in ``evals`` (and at step 0), one second of wall per step."""
    out: list[dict[str, Any]] = [{"event": "TrainingStarted", "time": start}]
    if 0 in evals:
        out.append({"event": "EvalDone", "step": 0, "val_loss": evals[0], "time": start})
    elapsed = 0.0
    for index, seconds in enumerate(step_seconds):
        step = index + 1
        elapsed += seconds
        out.append({"event": "StepDone", "step": step, "elapsed": elapsed,
                    "time": start + step})
        if step in evals:
            out.append({"event": "EvalDone", "step": step, "val_loss": evals[step],
                        "time": start + step + 0.5})
    return out


def test_time_to_target_leaves_compilation_out() -> None:
    # Step 1 compiles for 20 s; every other step takes 0.1 s.
    run = records([20.1] + [0.1] * 9, {0: 4.2, 4: 1.6, 6: 1.47, 8: 1.40}, start=100.0)
    curve = gc.eval_curve(run, launched=90.0)
    assert [p.step for p in curve] == [0, 4, 6, 8]
    reached = gc.first_reaching(curve, 1.47)
    assert reached is not None and reached.step == 6  # at the target counts
    assert reached.train_s == pytest.approx(20.6)
    assert reached.train_s_clean == pytest.approx(0.6)  # the 20 s of compiling left out
    assert reached.wall_s == pytest.approx(16.5)  # from the launch, not from the first record
    assert gc.first_reaching(curve, 1.3) is None


def test_steady_tokens_per_second_skips_warm_up_and_outliers() -> None:
    times = [30.0, 0.5, 0.5] + [0.2] * 40 + [5.0] + [0.2] * 40  # compile, warm-up, one stall
    rate = gc.steady_tokens_per_s(records(times, {}), tokens_per_step=1000)
    assert rate == pytest.approx(1000 / 0.2)
    assert gc.steady_tokens_per_s([], 1000) is None


def test_compile_break_even() -> None:
    # 20 s of compiling at 1.25× the speed is won back after 100 s: 1.0 · 100 = 1.25 · 80.
    assert gc.compile_break_even_s(20.0, 1.0e6, 1.25e6) == pytest.approx(100.0)
    assert gc.compile_break_even_s(20.0, 1.0e6, 1.0e6) is None  # never


def test_target_verdicts() -> None:
    at_most = gc.target("k", "d", 1.46, 1.47, at_least=False)
    assert at_most["passed"] is True and at_most["comparison"] == "<="
    assert gc.target("k", "d", 1.48, 1.47, at_least=False)["passed"] is False
    assert gc.target("k", "d", 0.95, 0.95, at_least=True)["passed"] is True
    unmeasured = gc.target("k", "d", None, 1.47, at_least=False, reason="never reached")
    assert unmeasured["passed"] is None and unmeasured["reason"] == "never reached"


def test_winner_is_sooner_to_the_target_else_lower_best() -> None:
    sooner = {"train_s_to_target": 12.0, "best_val": 1.46}
    later_but_lower = {"train_s_to_target": 20.0, "best_val": 1.42}
    never = {"train_s_to_target": None, "best_val": 1.40}
    assert min([later_but_lower, sooner, never], key=gc.rank_key) is sooner
    assert min([never, {"train_s_to_target": None, "best_val": 1.5}], key=gc.rank_key) is never


def test_the_gpu_plan_fits_the_budget_and_covers_every_step() -> None:
    plan = gc.make_plan(False, gc.SECOND_SHAPE)
    assert set(plan.planned_s) == set(gc.STEPS) == set(gc.STEP_ORDER)
    assert sum(plan.planned_s.values()) <= gc.TOTAL_BUDGET_S
    assert "--time-budget" in plan.length and "60s" in plan.length
    assert all(plan.timeout_s[name] >= plan.planned_s[name] for name in plan.planned_s)


# -- the step machinery ---------------------------------------------------------------------------


@pytest.fixture
def check(tmp_path: Path) -> Any:
    args = gc.parse_args(["--device", "cpu", "--smoke"])
    data = tmp_path / "play.txt"
    data.write_text("ROMEO: come night\n" * 50, encoding="utf-8")
    made = gc.Check(args, gc.make_plan(True, []), data, tmp_path, tmp_path / "out.json",
                    tmp_path / "out.log")
    yield made
    made.log_file.close()


def test_a_failing_step_is_recorded_and_the_next_one_runs(check: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(_check: Any) -> dict[str, Any]:
        raise gc.StepFailed("train: exit 1: boom")

    def crashes(_check: Any) -> dict[str, Any]:
        raise KeyError("best_step")

    def measures(_check: Any) -> dict[str, Any]:
        return {"value": 1.0, "targets": [gc.target("t", "d", 2.0, 1.0, at_least=False)]}

    monkeypatch.setitem(gc.STEPS, "gpu_preset", ("fails", fails))
    monkeypatch.setitem(gc.STEPS, "fast_gpu_shape", ("crashes", crashes))
    monkeypatch.setitem(gc.STEPS, "fast_second_shape", ("measures", measures))
    chosen = {"gpu_preset", "fast_gpu_shape", "fast_second_shape"}
    entries = [gc.run_step(check, name, chosen)
               for name in ("gpu_preset", "fast_gpu_shape", "fast_second_shape", "torchrun_nccl")]
    assert [e["status"] for e in entries] == ["error", "error", "target_missed", "skipped"]
    assert entries[0]["reason"] == "train: exit 1: boom"
    assert entries[1]["reason"].startswith("KeyError")
    assert entries[2]["measured"] == {"value": 1.0} and entries[2]["targets"][0]["passed"] is False
    assert entries[3]["reason"] == "not selected (--only)"
    log = Path(check.log_file.name).read_text(encoding="utf-8")
    assert "-> gpu_preset: error" in log and "FAIL d" in log


def test_a_training_run_cut_at_its_timeout_keeps_its_curve(check: Any,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    logged = records([0.1] * 5, {0: 4.0, 4: 2.0})
    logged[0]["config"] = {"model": {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8,
                                     "vocab_size": 10, "dropout": 0.0, "rope": True,
                                     "qk_norm": True},
                           "train": {"batch_size": 2, "grad_accum_steps": 1,
                                     "learning_rate": 1e-3, "muon_lr": 0.02,
                                     "optimizer": "muon", "schedule": "wsd",
                                     "eval_interval": 4, "eval_iters": 1, "patience": 0,
                                     "time_budget": 60.0, "compile": False,
                                     "max_iters": 10**9}}

    def cut(argv: list[str], timeout: float, env: Any = None) -> Any:
        """The run logs five steps and two evaluations, then its timeout stops it."""
        folder = Path(argv[argv.index("--out") + 1])
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in logged),
                                              encoding="utf-8")
        return gc.Command(argv, None, "", "", timeout, 90.0)

    monkeypatch.setattr(check, "run", cut)
    with pytest.raises(gc.StepFailed) as failed:
        check.train("cut", [], timeout=5.0)
    assert str(failed.value) == "train: timed out after 5 s"
    assert failed.value.partial is not None
    assert [row[0] for row in failed.value.partial["curve"]] == [0, 4]


def test_the_total_guard_skips_a_step_that_no_longer_fits(check: Any) -> None:
    check.deadline = time.monotonic() + 1.0  # less than any step plans
    entry = gc.run_step(check, "gpu_preset", {"gpu_preset"})
    assert entry["status"] == "skipped" and entry["reason"].startswith("total guard")


def test_a_command_past_its_timeout_is_stopped_and_recorded(check: Any) -> None:
    began = time.monotonic()
    command = check.run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.0)
    assert time.monotonic() - began < 30
    assert command.returncode is None and not command.ok
    assert command.describe_failure().startswith("timed out")


def test_a_failure_is_told_by_the_line_that_names_the_error() -> None:
    crashed = gc.Command(["x"], 1, "", "Traceback (most recent call last):\n  File \"x\"\n"
                         "AssertionError: the app did not exit; screen was:\nstep 100\n", 2.0,
                         0.0)
    assert crashed.describe_failure() == ("exit 1: AssertionError: the app did not exit; "
                                          "screen was:")
    refused = gc.Command(["x"], 2, "", "error: --device cuda was asked for\n", 1.0, 0.0)
    assert refused.describe_failure() == "exit 2: error: --device cuda was asked for"
    assert gc.Command(["x"], 3, "", "", 1.0, 0.0).describe_failure() == "exit 3: "


@pytest.mark.slow
def test_sigterm_stops_the_running_command_and_keeps_the_report(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    script = subprocess.Popen([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke",
                               "--out", str(out), "--only", "environment"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out.with_suffix(".log")
    deadline = time.monotonic() + 60
    while not (log.exists() and "$ " in log.read_text(encoding="utf-8")):
        assert time.monotonic() < deadline and script.poll() is None
        time.sleep(0.05)
    script.terminate()
    assert script.wait(timeout=60) == 130
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["interrupted"] is True
    assert "--- exit" not in log.read_text(encoding="utf-8")  # stopped inside the command


def test_data_must_exist_on_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "none.txt"),
                           "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --data") and "Traceback" not in done.stderr


# -- one whole smoke run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        out = tmp_path_factory.mktemp("gpu-check") / "smoke.json"
        done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke",
                               "--out", str(out), "--total-budget", "3000"],
                              capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, done.stderr[-3000:]
        report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        report["log"] = out.with_suffix(".log").read_text(encoding="utf-8")
        return report

    shared: dict[str, Any] = once_per_session(tmp_path_factory, "gpu-check-smoke", run)
    return shared


def measured(report: dict[str, Any], name: str) -> dict[str, Any]:
    step = next(s for s in report["steps"] if s["name"] == name)
    assert step["status"] in ("ok", "target_missed"), step
    result: dict[str, Any] = step["measured"]
    return result


@pytest.mark.slow
def test_smoke_runs_every_step(smoke: dict[str, Any]) -> None:
    assert [s["name"] for s in smoke["steps"]] == list(gc.STEP_ORDER)
    for step in smoke["steps"]:
        if step["name"] == "app_at_gpu_pace" and shutil.which("tmux") is None:
            assert step["status"] == "skipped" and step["reason"] == "tmux is not installed"
            continue
        assert step["status"] in ("ok", "target_missed"), step  # ran: toy targets may miss
        assert step["wall_s"] > 0
    assert smoke["budget"]["planned_sum_s"] == sum(smoke["budget"]["planned_s"].values())
    assert set(smoke["summary"]["steps"]) == set(gc.STEP_ORDER)
    assert smoke["environment"]["torch"] and smoke["environment"]["device"] == "cpu"
    assert "$ " in smoke["log"] and "--- stdout ---" in smoke["log"]  # raw output kept


@pytest.mark.slow
def test_smoke_training_figures_are_sane(smoke: dict[str, Any]) -> None:
    uniform = math.log(200)  # far above any char model's first loss
    for name in ("gpu_preset", "fast_gpu_shape", "fast_second_shape", "compile_winner",
                 "fifteen_seconds"):
        run = measured(smoke, name)
        assert 0 < run["best_val"] < uniform and run["best_val"] <= run["final_val"]
        assert run["flops_per_token"] > 0 and run["train_s"] > 0
        assert run["mfu"] is None  # no bf16 peak for a CPU: not made up
        assert run["curve"] and run["curve"][0][0] == 0
        if name != "fifteen_seconds":  # a time budget on a busy CPU may allow a step or two
            assert run["tokens_per_s_steady"] > 0
    preset = measured(smoke, "gpu_preset")
    assert preset["ends_on_best"] is True and preset["final_minus_best"] >= 0
    assert measured(smoke, "fast_second_shape")["tokens_per_step"] == 2 * measured(
        smoke, "fast_gpu_shape")["tokens_per_step"]
    compiled = measured(smoke, "compile_winner")
    assert compiled["winner"] in ("fast_gpu_shape", "fast_second_shape")
    assert compiled["speedup"] > 0
    eager_steps = measured(smoke, compiled["winner"])["steps"]
    assert compiled["length"] == ["--max-iters", str(eager_steps)]
    assert measured(smoke, "fifteen_seconds")["max_iters"] >= 1


@pytest.mark.slow
def test_smoke_checks_the_engine_views_and_launchers(smoke: dict[str, Any]) -> None:
    bench = measured(smoke, "kv_cache_and_beam")
    assert bench["cases"] == ["sampling", "beam_search"]
    keys = {t["key"]: t for t in smoke["targets"] if t["step"] == "kv_cache_and_beam"}
    assert set(keys) == {"kv_cache_inside_block", "kv_cache_past_block", "beam4_cost"}
    assert all(t["value"] > 0 for t in keys.values())
    views = measured(smoke, "explain_views")["probe"]["checkpoints"]
    assert {v["rope"] for v in views} == {True, False}  # the fast recipe and the lecture one
    for view in views:
        assert view["attention_causal"] and view["attention_rows_sum_to_1"]
        assert view["attention_max_abs_diff"] == 0.0  # the CPU against itself
    torchrun = measured(smoke, "torchrun_nccl")
    assert torchrun["backend"] == "gloo" and torchrun["result"]["state"] == "finished"
    if shutil.which("tmux"):
        app = measured(smoke, "app_at_gpu_pace")
        assert app["summary"]["median_ratio"] > 0 and len(app["runs"]) == 2
        assert {t["key"] for t in smoke["targets"] if t["step"] == "app_at_gpu_pace"} == {
            "app_pace", "app_first_char", "app_same_final_val"}
