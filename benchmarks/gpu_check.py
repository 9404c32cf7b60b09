"""The GPU box, measured: one prepared run of at most 8 minutes that checks what the project
claims on a GPU (issue 19), and writes every figure to ``benchmarks/results/gpu_check.json``
plus a readable log (every command and its raw output) next to it.

    python benchmarks/gpu_check.py --data tinyshakespeare.txt        # on the GPU box
    python benchmarks/gpu_check.py --device cpu --smoke              # every step at toy size

Every step drives the installed CLI in a subprocess (``chargpt-tui train --json`` and friends,
``torchrun``, the app in tmux), so the check follows the product, not its internals. Each step
has its own timeout; a failing step is recorded and the next one runs. A total guard keeps the
whole run inside ``--total-budget`` (480 s): a step whose planned seconds no longer fit is
skipped with that reason. The JSON is rewritten after every step, so a run cut short still
leaves what it measured. ``--only STEP`` reruns chosen steps (into the file given by ``--out``).

What imports torch lives in ``gpu_check_probes.py`` (the device's versions; the explain views'
computations on the device against the CPU), run as subprocesses too: this orchestrator never
imports torch, so it never holds the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# -- the targets of issue 19 (on one H200) -------------------------------------------------------
TARGET_VAL = 1.47  # best val within TARGET_TRAIN_S of training, compilation excluded
STRETCH_VAL = 1.45  # at any length
TARGET_TRAIN_S = 15.0
PRESET_END_GAP = 0.01  # the shipped gpu preset ends within this of its best val
APP_PACE_RATIO = 0.95  # app steps/s over headless steps/s, at least
FIRST_CHAR_MS = 50.0  # median time to the first character while training, at most
SAME_FINAL_VAL = 0.01  # the app's final val against the headless run's, at most apart
KV_CACHE_SPEEDUP = 5.0
BEAM4_COST = 2.0

# Dense bf16 tensor-core peaks (vendor datasheets), matched in order against the device name.
# MFU is reported against the H200's (989 TFLOP/s, the same as the H100 SXM's) on an H200.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200", 989e12), ("H100", 989e12),
    ("A100", 312e12), ("L40S", 362e12),
)
TINY_SHAKESPEARE_BYTES = 1_115_394
TOTAL_BUDGET_S = 480.0  # 8 minutes: leaves a 15-minute lease room for the start and a rerun
ERROR_LINE = re.compile(r"^error:|\w+(Error|Exception)\b")  # a CLI error or a traceback's end
OUTLIER_STEP = 10.0  # a step this many times the median step (and > 0.25 s): compile, warm-up


# =================================================================================================
# Arithmetic (unit-tested in tests/cli/test_gpu_check.py)


def flops_per_token(n_layer: int, n_head: int, n_embd: int, block_size: int,
                    vocab_size: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward 2, backward 4) plus attention's
    12 · layers · heads · head size · context (nanoGPT's and the PaLM paper's estimate, which
    counts the full T×T score matrix, not the causal half). Embedding lookups are not matmuls;
    QK-norm, rotary positions and Muon's Newton–Schulz are not model FLOPs and are left out."""
    matmul_weights = 12 * n_layer * n_embd**2 + n_embd * vocab_size  # qkv, proj, 4x MLP; head
    attention = 12 * n_layer * n_head * (n_embd // n_head) * block_size
    return 6.0 * matmul_weights + attention


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's dense bf16 peak."""
    if peak is None or peak <= 0:
        return None
    return tokens_per_s * flops_per_tok / peak


@dataclass(frozen=True)
class EvalPoint:
    step: int
    train_s: float  # seconds of training (evaluations and start-up excluded) up to this step
    train_s_clean: float  # the same without compilation and warm-up outliers
    val: float
    wall_s: float | None  # seconds from the command's launch to this evaluation


def step_times(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, seconds that step trained) from consecutive StepDone ``elapsed`` values."""
    out, before = [], 0.0
    for record in records:
        if record.get("event") == "StepDone":
            out.append((record["step"], record["elapsed"] - before))
            before = record["elapsed"]
    return out


def outlier_excess(times: list[tuple[int, float]]) -> dict[int, float]:
    """Seconds beyond the median of each outlier step: compilation (the first step of a
    compiled run, recompiles) and CUDA warm-up. Subtracted for "compilation excluded"."""
    if not times:
        return {}
    median = statistics.median(t for _, t in times)
    limit = max(OUTLIER_STEP * median, 0.25)
    return {step: t - median for step, t in times if t > limit}


def eval_curve(records: list[dict[str, Any]], launched: float | None = None) -> list[EvalPoint]:
    """Every evaluation with the training seconds it took to get there."""
    elapsed = {0: 0.0}
    elapsed.update({r["step"]: r["elapsed"] for r in records if r.get("event") == "StepDone"})
    excess = outlier_excess(step_times(records))
    curve = []
    for record in records:
        if record.get("event") != "EvalDone" or record["step"] not in elapsed:
            continue
        step = record["step"]
        spent = elapsed[step]
        clean = spent - sum(extra for s, extra in excess.items() if s <= step)
        wall = record["time"] - launched if launched is not None else None
        curve.append(EvalPoint(step, round(spent, 3), round(clean, 3), record["val_loss"],
                               None if wall is None else round(wall, 3)))
    return curve


def first_reaching(curve: list[EvalPoint], target: float) -> EvalPoint | None:
    """The first evaluation at or below ``target``."""
    return next((point for point in curve if point.val <= target), None)


def steady_tokens_per_s(records: list[dict[str, Any]], tokens_per_step: int) -> float | None:
    """Tokens per second of training after warm-up: the first 5 % of steps and any outlier
    step (compilation) left out."""
    times = step_times(records)
    skip = max(3, len(times) // 20)
    excess = outlier_excess(times)
    kept = [t for step, t in times[skip:] if step not in excess]
    if not kept or sum(kept) <= 0:
        return None
    return tokens_per_step * len(kept) / sum(kept)


def compile_break_even_s(compile_s: float, eager_rate: float, compiled_rate: float
                         ) -> float | None:
    """Training seconds after which a compiled run has trained as many tokens as an eager run
    started at the same moment: ``eager · t = compiled · (t − compile_s)``. None: never."""
    if compiled_rate <= eager_rate:
        return None
    return compile_s * compiled_rate / (compiled_rate - eager_rate)


def target(key: str, description: str, value: float | None, goal: float, at_least: bool,
           unit: str = "", reason: str = "") -> dict[str, Any]:
    """One target of the issue, checked on one measured value (None: not measured, see
    ``reason``)."""
    passed = None if value is None else (value >= goal if at_least else value <= goal)
    return {"key": key, "description": description, "value": value, "goal": goal,
            "comparison": ">=" if at_least else "<=", "unit": unit, "passed": passed,
            "reason": reason if value is None else ""}


# =================================================================================================
# Running commands


@dataclass
class Command:
    argv: list[str]
    returncode: int | None  # None: killed at its timeout
    stdout: str
    stderr: str
    wall_s: float
    launched: float  # time.time() at launch: metrics.jsonl records use the same clock

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def describe_failure(self) -> str:
        """Why it failed, in one line: the timeout, or the exit status and the last line that
        names an error (else the last line) of its output."""
        if self.returncode is None:
            return f"timed out after {self.wall_s:.0f} s"
        lines = [line.strip() for line in (self.stderr or self.stdout).splitlines()
                 if line.strip()]
        named = [line for line in lines if ERROR_LINE.search(line)]
        last = (named or lines or [""])[-1]
        return f"exit {self.returncode}: {last[:300]}"


class StepFailed(Exception):
    """A step could not measure what it is for (the reason is recorded; the run goes on).
    ``partial``: what it measured before it failed (a run cut at its timeout still has its
    curve)."""

    def __init__(self, reason: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.partial = partial


@dataclass(frozen=True)
class Plan:
    """What each step runs: the real thing on a GPU, toy sizes with ``--smoke``."""

    smoke: bool
    preset: list[str]  # the shipped gpu preset
    fast: list[str]  # the fast recipe at the gpu shape, minus its length
    length: list[str]  # how long the fast runs train: --time-budget 60s (GPU)
    second_shape: list[str]  # options on top of ``fast`` for the second shape
    short_train_s: float  # the target's training seconds (15)
    bench: list[str]  # the size flag of `chargpt-tui bench`
    torchrun: list[str]
    app: list[str]  # app_at_gpu_pace options
    compile_flag: str  # the compile variant's flag (the smoke cannot compile on a loaded CPU)
    planned_s: dict[str, float]
    timeout_s: dict[str, float]


# The second shape, argued in docs/gpu-check.md: the same 6×384 model at twice the batch. At
# this size an H200 step is bound by kernel launches (~10 % MFU measured in 2026-11), so twice
# the tokens per step should cost far less than twice the time; AdamW's lr grows by √2 with it
# (Muon's orthogonalised update needs no change). A wider or deeper model would overfit the
# 1 MB corpus sooner (nanoGPT: 12 layers reach only 1.49 before overfitting).
SECOND_SHAPE = ["--batch-size", "128", "--learning-rate", "1.4e-3"]

# Each step's planned seconds on one H200 and its timeout. The plan sums to 465 of the 480 s
# allowed; the timeouts are what a step may take when something is slow, and the total guard
# still cuts every command at the 480 s mark. Planned from the H200 run of 2026-11 (the gpu
# preset compiled: 5000 steps and 20 evaluations in 117 s, ~80 steps/s) and ~8 s of start-up
# (imports, CUDA context, data) per command.
GPU_SECONDS: dict[str, tuple[float, float]] = {
    "environment": (10, 60),  # torch import, one matmul, nvidia-smi
    "gpu_preset": (70, 150),  # 2500 steps (~35 s eager), 11 evaluations of 200 batches
    "fast_gpu_shape": (65, 100),  # --time-budget 60s counts start-up; +final eval and exit
    "fast_second_shape": (65, 100),
    "compile_winner": (75, 150),  # the eager run's steps, compiled (compiling ~30 s?)
    "kv_cache_and_beam": (40, 120),  # bench --quick cases 2-3 (sampling 250 and 1000 chars)
    "explain_views": (15, 60),  # `explain` once, and the probe on two checkpoints
    "torchrun_nccl": (20, 90),  # 100 steps under torchrun
    "app_at_gpu_pace": (75, 150),  # headless then app, 1000 steps each
    "fifteen_seconds": (30, 90),  # 14 s of training plus start-up, evaluations (compiling)
}
# --smoke on a CPU: toy sizes; planned from the 2-core machine this was written on (unloaded).
# A loaded machine can be ten times slower: the timeouts leave room for that.
SMOKE_SECONDS: dict[str, tuple[float, float]] = {
    "environment": (4, 120), "gpu_preset": (5, 240), "fast_gpu_shape": (4, 240),
    "fast_second_shape": (4, 240), "compile_winner": (4, 240), "kv_cache_and_beam": (12, 240),
    "explain_views": (6, 240), "torchrun_nccl": (5, 240), "app_at_gpu_pace": (12, 300),
    "fifteen_seconds": (6, 240),
}
STEP_ORDER = tuple(GPU_SECONDS)


def make_plan(smoke: bool, second_shape: list[str]) -> Plan:
    if not smoke:
        return Plan(
            smoke=False, preset=["--preset", "gpu"],
            fast=["--preset", "gpu", "--recipe", "fast", "--patience", "0",
                  "--eval-interval", "150", "--eval-iters", "100"],
            length=["--time-budget", "60s"], second_shape=second_shape,
            short_train_s=TARGET_TRAIN_S, bench=["--quick"],
            torchrun=["--preset", "gpu", "--max-iters", "100", "--eval-interval", "50",
                      "--eval-iters", "10"],
            app=["--preset", "gpu", "--rounds", "1", "--prompts", "4", "--prompt-every", "2",
                 "--option=--max-iters=1000"],
            compile_flag="--compile",
            planned_s={name: planned for name, (planned, _) in GPU_SECONDS.items()},
            timeout_s={name: timeout for name, (_, timeout) in GPU_SECONDS.items()})
    tiny = ["--preset", "tiny", "--eval-iters", "2"]
    return Plan(
        smoke=True, preset=[*tiny, "--max-iters", "30", "--eval-interval", "10", "--patience",
                            "2"],
        # Step counts, not time budgets: start-up alone can take 10 s on a loaded CPU.
        fast=[*tiny, "--recipe", "fast", "--patience", "0", "--eval-interval", "10"],
        length=["--max-iters", "20"], second_shape=["--batch-size", "16"], short_train_s=3.0,
        bench=["--tiny"], torchrun=[*tiny, "--max-iters", "10", "--eval-interval", "5"],
        app=["--preset", "tiny", "--rounds", "1", "--prompts", "1", "--prompt-every", "0.5",
             "--option=--max-iters=60", "--option=--eval-iters=2"],
        # Compiling takes minutes on a few cores: the smoke runs that step eagerly.
        compile_flag="--no-compile",
        planned_s={name: planned for name, (planned, _) in SMOKE_SECONDS.items()},
        timeout_s={name: timeout for name, (_, timeout) in SMOKE_SECONDS.items()})


class Check:
    """One run of the whole check: the plan, the log, what each step measured."""

    def __init__(self, args: argparse.Namespace, plan: Plan, data: Path, work: Path,
                 out: Path, log: Path) -> None:
        self.args, self.plan, self.data, self.work, self.out = args, plan, data, work, out
        self.device = args.device
        self.log_file = log.open("w", encoding="utf-8")
        self.started = time.monotonic()
        self.deadline = self.started + args.total_budget
        self.measured: dict[str, dict[str, Any]] = {}  # step name → its measurements
        self.last_command: Command | None = None
        self.report: dict[str, Any] = {}

    # -- output ------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """A line for the log, and on stderr for whoever watches."""
        stamp = f"[{time.monotonic() - self.started:6.1f}s] "
        print(stamp + line, file=sys.stderr, flush=True)
        self.log_file.write(stamp + line + "\n")
        self.log_file.flush()

    def write_report(self) -> None:
        self.report["wall_s"] = round(time.monotonic() - self.started, 1)
        self.report["targets"] = [{"step": step["name"], **t} for step in self.report["steps"]
                                  for t in step.get("targets", [])]
        verdicts = [t["passed"] for t in self.report["targets"]]
        self.report["summary"] = {
            "targets_passed": verdicts.count(True), "targets_failed": verdicts.count(False),
            "targets_unmeasured": verdicts.count(None),
            "steps": {step["name"]: step["status"] for step in self.report["steps"]},
        }
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.report, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.out)

    # -- commands ------------------------------------------------------------------------------

    def remaining(self) -> float:
        return float(self.deadline - time.monotonic())

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None
            ) -> Command:
        """Run ``argv`` in a process group of its own; at the timeout (or the total guard,
        whichever comes first) the group gets SIGINT (training saves and stops, the app probe
        removes its tmux server), then SIGKILL. Its whole output goes to the log.

        A group, not a session: whoever stops this script (Ctrl+C, SIGTERM, a lease that
        ends) stops the command too, here or, failing that, with this script's session."""
        timeout = max(1.0, min(timeout, self.remaining()))
        self.say("$ " + " ".join(argv))
        launched, began = time.time(), time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=ROOT, preexec_fn=os.setpgrp,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        code: int | None = None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            stdout, stderr = stop_group(process)
        except KeyboardInterrupt:  # this script was asked to stop: so is its command
            stop_group(process)
            raise
        command = Command(argv, code, stdout, stderr, time.monotonic() - began, launched)
        self.last_command = command
        self.log_file.write(f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}--- "
                            f"exit {code}, {command.wall_s:.1f} s ---\n")
        self.log_file.flush()
        return command

    @staticmethod
    def cli(*words: str) -> list[str]:
        return [sys.executable, "-m", "chargpt_tui", *words]

    def train(self, name: str, options: list[str], timeout: float,
              launcher: list[str] | None = None, env: dict[str, str] | None = None,
              device: str | None = None) -> dict[str, Any]:
        """``chargpt-tui train --json`` into a run folder of its own; what it measured."""
        folder = self.work / name
        shutil.rmtree(folder, ignore_errors=True)
        words = ["train", "--json", "--device", device or self.device, "--data", str(self.data),
                 "--out", str(folder), *options]
        argv = [*launcher, *words] if launcher else self.cli(*words)
        command = self.run(argv, timeout, env)
        lines = command.json_lines()
        if not command.ok or not lines:
            partial = None
            if read_records(folder):  # what the run logged before it failed or was stopped
                partial = summarize_run(folder, lines[-1] if lines else {}, command,
                                        self.device_name())
            raise StepFailed(f"train: {command.describe_failure()}", partial)
        return summarize_run(folder, lines[-1], command, self.device_name())

    def device_name(self) -> str:
        return str(self.measured.get("environment", {}).get("device_name", ""))


def stop_group(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGINT to the command's group, SIGKILL 10 s later if it is still there; its output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.communicate()


def probe(*words: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("gpu_check_probes.py")), *words]


def repo_on_path() -> dict[str, str]:
    """The environment a probe needs to import chargpt_tui from this checkout, installed or
    not (a script's own folder, not the working directory, starts its import path)."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def read_records(folder: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl as dicts, one per line; a line being written is skipped."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def summarize_run(folder: Path, result: dict[str, Any], command: Command, device_name: str
                  ) -> dict[str, Any]:
    """A training run's figures: its result line, its eval curve, tokens/s and MFU."""
    records = read_records(folder)
    started = next((r for r in records if r.get("event") == "TrainingStarted"), None)
    if started is None:
        raise StepFailed(f"{folder / 'metrics.jsonl'} has no TrainingStarted record")
    model, train = started["config"]["model"], started["config"]["train"]
    tokens_per_step = train["batch_size"] * model["block_size"] * train["grad_accum_steps"]
    per_token = flops_per_token(model["n_layer"], model["n_head"], model["n_embd"],
                                model["block_size"], model["vocab_size"])
    curve = eval_curve(records, command.launched)
    steady = steady_tokens_per_s(records, tokens_per_step)
    peak = peak_flops(device_name)
    excess = outlier_excess(step_times(records))
    best = next((p for p in curve if p.step == result.get("best_step")), None)
    reached = first_reaching(curve, TARGET_VAL)
    return {
        "run_dir": str(folder), "wall_s": round(command.wall_s, 2),
        "startup_s": round(started["time"] - command.launched, 2),
        "result": result,
        "shape": {k: model[k] for k in ("n_layer", "n_head", "n_embd", "block_size",
                                        "vocab_size", "dropout", "rope", "qk_norm")},
        "train_config": {k: train[k] for k in ("batch_size", "learning_rate", "muon_lr",
                                               "optimizer", "schedule", "eval_interval",
                                               "eval_iters", "patience", "time_budget",
                                               "compile", "max_iters")},
        "tokens_per_step": tokens_per_step,
        "best_val": result.get("best_val_loss"), "best_step": result.get("best_step"),
        "final_val": result.get("val_loss"), "steps": result.get("step"),
        "train_s": round(result.get("elapsed", 0.0), 2),
        "compile_and_warmup_s": round(sum(excess.values()), 2),
        "wall_to_best_s": best.wall_s if best else None,
        "train_s_to_best": best.train_s if best else None,
        "train_s_to_target": reached.train_s_clean if reached else None,
        "step_of_target": reached.step if reached else None,
        "tokens_per_s_overall": round(result.get("tokens_per_second", 0.0), 1),
        "tokens_per_s_steady": None if steady is None else round(steady, 1),
        "flops_per_token": per_token,
        "achieved_tflops": None if steady is None else round(steady * per_token / 1e12, 4),
        "peak_flops": peak,
        "mfu": None if steady is None or peak is None else round(mfu(steady, per_token, peak)
                                                               or 0.0, 4),
        "mfu_note": ("6N + 12·L·H·hs·T FLOPs per token at the steady tokens/s, against "
                     f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else
                     f"no dense bf16 peak known for {device_name or 'this device'}"),
        "curve": [[p.step, p.train_s, p.train_s_clean, round(p.val, 4), p.wall_s]
                  for p in curve],
        "curve_columns": ["step", "train_s", "train_s_clean", "val", "wall_s"],
    }


# =================================================================================================
# The steps


def step_environment(check: Check) -> dict[str, Any]:
    command = check.run(probe("env", "--device", check.device),
                        check.plan.timeout_s["environment"], repo_on_path())
    lines = command.json_lines()
    if not command.ok or not lines:
        raise StepFailed(f"the device probe failed: {command.describe_failure()}")
    info = lines[-1]
    smi = shutil.which("nvidia-smi")
    if smi:
        info["nvidia_smi"] = check.run([smi], 20).stdout
    tmux = shutil.which("tmux")
    info["tmux"] = check.run([tmux, "-V"], 10).stdout.strip() if tmux else None
    return info


def step_gpu_preset(check: Check) -> dict[str, Any]:
    run = check.train("gpu_preset", check.plan.preset, check.plan.timeout_s["gpu_preset"])
    trained = check.last_command
    # A run that ended past its best says so: "the model now holds its best weights ...".
    run["restored_best_notice"] = trained is not None and "holds its best weights" in (
        trained.stderr)
    # What the user samples after the run: `sample` opens best.pt (the weights the run ended on).
    sample = check.run(check.cli("sample", "--checkpoint", run["run_dir"], "--device",
                                 check.device, "--max-new-tokens", "40", "--seed", "0",
                                 "--json"), 60)
    opened = sample.json_lines()
    run["sampled_step"] = opened[-1]["step"] if sample.ok and opened else None
    run["ends_on_best"] = run["sampled_step"] is not None and run["sampled_step"] == run[
        "best_step"]
    gap = (None if run["final_val"] is None or run["best_val"] is None
           else round(run["final_val"] - run["best_val"], 4))
    run["final_minus_best"] = gap
    run["targets"] = [
        target("preset_ends_near_best", "the shipped gpu preset ends within 0.01 of its best "
               "val (last evaluation − best)", gap, PRESET_END_GAP, False, "nats"),
        target("preset_on_best_weights", "the model ends on its best weights (sample opens the "
               "best step)", float(run["ends_on_best"]), 1.0, True, "",
               ) if run["sampled_step"] is not None else
        target("preset_on_best_weights", "the model ends on its best weights", None, 1.0, True,
               reason=f"sample failed: {sample.describe_failure()}"),
    ]
    return run


def fast_targets(run: dict[str, Any], label: str) -> list[dict[str, Any]]:
    reason = f"val never reached {TARGET_VAL} (best {run['best_val']})"
    return [
        target(f"{label}_to_{TARGET_VAL}", f"{label}: seconds of training (compilation "
               f"excluded) to val ≤ {TARGET_VAL}, at most {TARGET_TRAIN_S:.0f}",
               run["train_s_to_target"], TARGET_TRAIN_S, False, "s", reason),
        target(f"{label}_stretch", f"{label}: best val ≤ {STRETCH_VAL} (stretch)",
               run["best_val"], STRETCH_VAL, False, "nats", "no evaluation"),
    ]


def step_fast_gpu_shape(check: Check) -> dict[str, Any]:
    return fast_run(check, "fast_gpu_shape", check.plan.fast)


def step_fast_second_shape(check: Check) -> dict[str, Any]:
    return fast_run(check, "fast_second_shape", [*check.plan.fast, *check.plan.second_shape])


def fast_run(check: Check, name: str, shape: list[str]) -> dict[str, Any]:
    """The fast recipe at ``shape`` (train options), eager, for the plan's length."""
    run = check.train(name, [*shape, *check.plan.length, "--no-compile"],
                      check.plan.timeout_s[name])
    run["shape_options"] = shape
    run["targets"] = fast_targets(run, name)
    return run


def rank_key(run: dict[str, Any]) -> tuple[float, float]:
    """Sooner to the target wins; if neither gets there, the lower best val."""
    to_target = run.get("train_s_to_target")
    best = run.get("best_val")
    return (math.inf if to_target is None else to_target, math.inf if best is None else best)


def winner(check: Check) -> tuple[str, list[str], dict[str, Any] | None]:
    """The fast shape that did better (its name, its shape's options, its eager run), or the
    gpu shape when neither ran."""
    runs = [(name, check.measured[name]) for name in ("fast_gpu_shape", "fast_second_shape")
            if name in check.measured]
    if not runs:
        return "fast_gpu_shape", check.plan.fast, None
    name, run = min(runs, key=lambda item: rank_key(item[1]))
    return name, run["shape_options"], run


def step_compile_winner(check: Check) -> dict[str, Any]:
    """The winner again, compiled, for the same number of steps as its eager run.

    Equal steps rather than the same time budget: a budgeted run keeps back 1.5 × its first
    evaluation for the last one, and a compiled run's first evaluation includes compiling,
    so a budget would measure that reserve more than the compiler."""
    name, shape, eager = winner(check)
    length = ["--max-iters", str(eager["steps"])] if eager else check.plan.length
    run = check.train("compile_winner", [*shape, *length, check.plan.compile_flag],
                      check.plan.timeout_s["compile_winner"])
    trained = check.last_command
    run.update(winner=name, shape_options=shape, length=length,
               compile_flag=check.plan.compile_flag,
               compile_fell_back=trained is not None and "torch.compile failed" in trained.stderr)
    run["targets"] = fast_targets(run, "compile_winner")
    if eager is None:
        run["verdict"] = "no eager run of the winner to compare with"
        return run
    eager_rate, rate = eager["tokens_per_s_steady"], run["tokens_per_s_steady"]
    compile_s = max(0.0, run["compile_and_warmup_s"] - eager["compile_and_warmup_s"])
    break_even = (compile_break_even_s(compile_s, eager_rate, rate)
                  if eager_rate and rate else None)
    run.update(
        eager_best_val=eager["best_val"], eager_tokens_per_s=eager_rate,
        eager_train_s=eager["train_s"], eager_train_s_to_target=eager["train_s_to_target"],
        speedup=round(rate / eager_rate, 3) if eager_rate and rate else None,
        compile_s=round(compile_s, 2),
        break_even_train_s=None if break_even is None else round(break_even, 1),
        compile_worth_it=break_even is not None and break_even < eager["train_s"],
        verdict=(f"{eager['steps']} steps: compiled {run['train_s']} s of training (compiling "
                 f"{compile_s:.0f} s) vs eager {eager['train_s']} s; "
                 + ("compiling never pays back" if break_even is None else
                    f"compiling pays back after {break_even:.0f} s of training")))
    return run


def step_fifteen_seconds(check: Check) -> dict[str, Any]:
    """The winner for as many steps as a second less than the target's training seconds
    allow at its measured pace (compiled if compiling paid back within them): a schedule
    fitted to that length. The verdict reads the best evaluation inside 15 s."""
    name, shape, eager = winner(check)
    short = check.plan.short_train_s
    compiled = check.measured.get("compile_winner", {})
    use_compile = (compiled.get("break_even_train_s") is not None
                   and compiled["break_even_train_s"] < short)
    base = compiled if use_compile else eager
    rate = base.get("tokens_per_s_steady") if base else None
    if not base or not rate:
        raise SkipStep("no measured pace of the winner to size the run from")
    # Compilation is left out of the target's seconds, so it is not paid from them here.
    steps = max(1, int((short - 1.0) * rate / base["tokens_per_step"]))
    run = check.train("fifteen_seconds", [*shape, "--max-iters", str(steps),
                                          check.plan.compile_flag if use_compile
                                          else "--no-compile"],
                      check.plan.timeout_s["fifteen_seconds"])
    inside = [point[3] for point in run["curve"] if point[2] <= short]  # val, clean seconds
    run.update(winner=name, compiled=use_compile, max_iters=steps,
               train_s_clean=round(run["train_s"] - run["compile_and_warmup_s"], 2),
               best_val_inside=min(inside) if inside else None)
    run["targets"] = [target(
        "best_val_in_15s", f"best val ≤ {TARGET_VAL} after ≤ {short:g} s of training "
        "(compilation excluded), in a run fitted to that length", run["best_val_inside"],
        TARGET_VAL, False, "nats", f"no evaluation within {short:g} s of training")]
    return run


def step_kv_cache_and_beam(check: Check) -> dict[str, Any]:
    command = check.run(check.cli("bench", *check.plan.bench, "--json", "--device", check.device,
                                  "--case", "sampling", "--case", "beam_search"),
                        check.plan.timeout_s["kv_cache_and_beam"])
    lines = command.json_lines()
    if not command.ok or not lines:
        raise StepFailed(f"bench: {command.describe_failure()}")
    report = lines[-1]
    rows = {row["label"]: row["median"] for case in report["cases"].values()
            for row in case["rows"]}
    goals = {"kv_cache_inside_block": (KV_CACHE_SPEEDUP, True),
             "kv_cache_past_block": (KV_CACHE_SPEEDUP, True), "beam4_cost": (BEAM4_COST, False)}
    targets = [target(t["key"], t["description"], t["value"], *goals[t["key"]], t["unit"],
                      t["reason"]) for t in report["targets"] if t["key"] in goals]
    return {"machine": report["machine"], "notes": report["notes"], "rows": rows,
            "cases": list(report["cases"]), "seconds": report["seconds"], "targets": targets}


def step_explain_views(check: Check) -> dict[str, Any]:
    runs = [check.measured[name]["run_dir"] for name in
            ("compile_winner", "fast_gpu_shape", "fast_second_shape", "gpu_preset")
            if name in check.measured]
    if not runs:  # a rerun of this step alone: a short run of its own
        runs = [check.train("explain_run", [*check.plan.fast, "--max-iters", "20"],
                            check.plan.timeout_s["explain_views"])["run_dir"]]
    chosen = list(dict.fromkeys(runs[:1] + runs[-1:]))  # a fast (rotary) run and a lecture one
    text = held_out_text(check.data, 400)
    cli = check.run(check.cli("explain", "--checkpoint", chosen[0], f"--text={text}",
                              "--device", check.device, "--json"),
                    check.plan.timeout_s["explain_views"])
    lines = cli.json_lines()
    if not cli.ok or not lines:
        raise StepFailed(f"explain: {cli.describe_failure()}")
    views = check.run(probe("explain", "--device", check.device, f"--text={text}",
                            *(f"--run={run}" for run in chosen)),
                      check.plan.timeout_s["explain_views"], repo_on_path())
    found = views.json_lines()
    if not views.ok or not found:
        raise StepFailed(f"explain probe: {views.describe_failure()}")
    worst = max(max(r["attention_max_abs_diff"], r["surprise_mean_abs_diff"])
                for r in found[-1]["checkpoints"])
    return {"cli_mean_nats": lines[-1]["mean_nats"], "cli_step": lines[-1]["step"],
            "probe": found[-1],
            "targets": [target("explain_cuda_matches_cpu", "attention and surprise on the device "
                               "agree with the CPU (largest difference, fp32)", worst, 2e-3,
                               False)]}


def held_out_text(data: Path, length: int) -> str:
    """A passage from the validation tenth of the corpus (as the app's split takes it)."""
    text = data.read_text(encoding="utf-8")
    start = int(len(text) * 0.95)
    return text[start:start + length]


def step_torchrun_nccl(check: Check) -> dict[str, Any]:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = ([str(torchrun)] if torchrun.exists()
                else [sys.executable, "-m", "torch.distributed.run"])
    launcher += ["--nproc-per-node", "1", "--standalone", "-m", "chargpt_tui"]
    gpu = check.device.startswith("cuda")
    # Under torchrun each process takes cuda:LOCAL_RANK; an explicit cuda:N is refused.
    run = check.train("torchrun_nccl", check.plan.torchrun, check.plan.timeout_s["torchrun_nccl"],
                      launcher=launcher, env={"NCCL_DEBUG": "INFO"} if gpu else None,
                      device="cuda" if gpu else check.device)
    if run["result"].get("state") != "finished":
        raise StepFailed(f"torchrun run ended {run['result'].get('state')}")
    run["backend"] = "nccl" if gpu else "gloo"  # what distributed.launch picks for the device
    if gpu:  # NCCL_DEBUG=INFO makes NCCL say that it set up its communicator
        last = check.last_command
        seen = last is not None and "NCCL INFO" in last.stdout + last.stderr
        run["targets"] = [target("nccl_initialised", "NCCL set up its communicator "
                                 "(NCCL_DEBUG=INFO lines in the output)", float(seen), 1.0,
                                 True)]
    return run


def app_pace_command() -> list[str]:
    """The app-at-GPU-pace probe, wherever it lives now (it is moving to benchmarks/)."""
    script = ROOT / "benchmarks" / "app_at_gpu_pace.py"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "chargpt_tui.bench.app_at_gpu_pace"]


def step_app_at_gpu_pace(check: Check) -> dict[str, Any]:
    if shutil.which("tmux") is None:
        raise SkipStep("tmux is not installed")
    timeout = check.plan.timeout_s["app_at_gpu_pace"]
    command = check.run([*app_pace_command(), *check.plan.app, "--device", check.device,
                         "--data", str(check.data), "--timeout", str(timeout / 2)], timeout)
    lines = command.json_lines()
    summary = next((line["summary"] for line in lines if "summary" in line), None)
    if not command.ok or summary is None:
        raise StepFailed(f"app_at_gpu_pace: {command.describe_failure()}")
    finals = summary["final_val"]
    apart = (abs(finals["app"][0] - finals["headless"][0])
             if finals["app"] and finals["headless"] and None not in (finals["app"][0],
                                                                       finals["headless"][0])
             else None)
    return {"runs": [line for line in lines if "kind" in line], "summary": summary,
            "final_val_apart": apart,
            "targets": [
                target("app_pace", "the app trains at ≥ 0.95× headless steps/s",
                       summary["median_ratio"], APP_PACE_RATIO, True, "x", "no ratio"),
                target("app_first_char", "first character ≤ 50 ms while training (median)",
                       summary["first_char_ms_median"], FIRST_CHAR_MS, False, "ms",
                       "no answer's status was read"),
                target("app_same_final_val", "the app's final val equals the headless run's "
                       "(within 0.01)", apart, SAME_FINAL_VAL, False, "nats",
                       "a run had no final evaluation"),
            ]}


class SkipStep(Exception):
    """The step cannot run here (the reason is recorded)."""


STEPS: dict[str, tuple[str, Callable[[Check], dict[str, Any]]]] = {
    "environment": ("torch, CUDA and the device; nvidia-smi; tmux", step_environment),
    "gpu_preset": ("--preset gpu as shipped: time to best, final val, ends on best weights",
                   step_gpu_preset),
    "fast_gpu_shape": ("the fast recipe at the gpu shape, 60 s budget", step_fast_gpu_shape),
    "fast_second_shape": ("the fast recipe at the second shape, 60 s budget",
                          step_fast_second_shape),
    "compile_winner": ("the better fast run again with torch.compile, for as many steps",
                       step_compile_winner),
    "kv_cache_and_beam": ("bench cases 2-3 on the device: KV cache and beam search",
                          step_kv_cache_and_beam),
    "explain_views": ("the explain views' computations on the device vs the CPU",
                      step_explain_views),
    "torchrun_nccl": ("torchrun --nproc-per-node 1 (NCCL on CUDA, gloo on CPU)",
                      step_torchrun_nccl),
    "app_at_gpu_pace": ("the app in tmux at the device's pace vs headless",
                        step_app_at_gpu_pace),
    "fifteen_seconds": ("the winner for ~14 s of training at its measured pace",
                        step_fifteen_seconds),
}


def run_step(check: Check, name: str, chosen: set[str]) -> dict[str, Any]:
    title, function = STEPS[name]
    planned = check.plan.planned_s[name]
    entry: dict[str, Any] = {"name": name, "title": title, "planned_s": planned}
    if name not in chosen:
        return {**entry, "status": "skipped", "reason": "not selected (--only)"}
    if check.remaining() < planned:
        return {**entry, "status": "skipped",
                "reason": f"total guard: {check.remaining():.0f} s left of "
                          f"{check.args.total_budget:.0f}, this step plans {planned:.0f} s"}
    check.say(f"== {name}: {title} (planned {planned:.0f} s, "
              f"{check.remaining():.0f} s left)")
    began = time.monotonic()
    try:
        measured = function(check)
    except SkipStep as why:
        return {**entry, "status": "skipped", "reason": str(why)}
    except StepFailed as why:
        entry.update(status="error", reason=str(why))
        if why.partial:
            entry["measured"] = why.partial
    except Exception as error:  # noqa: BLE001 - recorded; the other steps still run
        entry.update(status="error", reason=f"{type(error).__name__}: {error}")
    else:
        check.measured[name] = measured
        targets = measured.pop("targets", [])
        failed = any(t["passed"] is False for t in targets)
        entry.update(status="target_missed" if failed else "ok", measured=measured,
                     targets=targets)
    entry["wall_s"] = round(time.monotonic() - began, 1)
    check.say(f"-> {name}: {entry['status']} in {entry['wall_s']} s"
              + (f" ({entry['reason']})" if entry.get("reason") else ""))
    for t in entry.get("targets", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        check.say(f"   {verdict} {t['description']}: {t['value']} (goal {t['comparison']} "
                  f"{t['goal']}){' — ' + t['reason'] if t['reason'] else ''}")
    return entry


# =================================================================================================
# Data and the command line


def find_data(given: str | None, smoke: bool, work: Path) -> tuple[Path, str]:
    """The corpus file and where it came from. On a GPU box Tiny Shakespeare is required (the
    targets are for it); the smoke makes up a small play-shaped text (quicker to load)."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            usage_error(f"--data {given}: no such file — pass the Tiny Shakespeare text file "
                        "(input.txt of karpathy/char-rnn)")
        return path.resolve(), "--data"
    if smoke:
        return made_up_corpus(work), "made up for the smoke"
    cache = Path(os.environ.get("CHARGPT_TUI_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chargpt-tui")
    for candidate in (cache / "tinyshakespeare.txt", ROOT / "shared" / "data" /
                      "tinyshakespeare.txt", ROOT.parent.parent / "shared" / "data" /
                      "tinyshakespeare.txt"):
        if candidate.is_file():
            return candidate.resolve(), "found"
    usage_error("no Tiny Shakespeare found (chargpt-tui's download cache, shared/data/"
                "tinyshakespeare.txt) — pass --data PATH (the GPU box may have no network)")


def interrupted(_signum: int, _frame: object) -> None:
    """SIGTERM (a lease or a job ending) stops the running command and keeps the report."""
    raise KeyboardInterrupt


def usage_error(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def made_up_corpus(work: Path) -> Path:
    import random

    rng = random.Random(0)
    names, words = ("ROMEO", "JULIET", "KING", "NURSE"), ("the", "king", "my", "thou", "love",
                                                           "night", "sweet", "shall", "come")
    lines = []
    for _ in range(1500):
        lines += [rng.choice(names) + ":", " ".join(rng.choice(words) for _ in range(6)) + ".",
                  ""]
    path = work / "play.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def describe_data(path: Path, origin: str) -> dict[str, Any]:
    raw = path.read_bytes()
    return {"path": str(path), "origin": origin, "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "is_tiny_shakespeare_size": len(raw) == TINY_SHAKESPEARE_BYTES}


def git_state() -> dict[str, Any]:
    def git(*words: str) -> str:
        try:
            return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true",
                        help="every step at toy size (about a minute on a CPU)")
    parser.add_argument("--data", help="the Tiny Shakespeare text file (default: chargpt-tui's "
                        "download cache, then shared/data/tinyshakespeare.txt)")
    parser.add_argument("--out", type=Path, help="the JSON (default benchmarks/results/"
                        "gpu_check.json; --smoke: runs/gpu_check_smoke.json); the log is the "
                        "same path with .log")
    parser.add_argument("--only", action="append", choices=STEP_ORDER,
                        help="run only this step (repeatable); the others are recorded skipped")
    parser.add_argument("--second-shape", default=" ".join(SECOND_SHAPE),
                        help="train options for the second fast shape, on top of the gpu shape's "
                        f"(default: {' '.join(SECOND_SHAPE)})")
    parser.add_argument("--total-budget", type=float, default=TOTAL_BUDGET_S,
                        help="seconds for the whole check; steps that no longer fit are skipped")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.smoke, args.second_shape.split())
    out = args.out or (ROOT / "runs" / "gpu_check_smoke.json" if args.smoke
                       else RESULTS / "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        data, origin = find_data(args.data, args.smoke, work)
        check = Check(args, plan, data, work, out, out.with_suffix(".log"))
        check.report = {
            "schema": 1, "check": "issue 19: the GPU box, measured",
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "mode": "smoke" if args.smoke else "gpu", "device": args.device,
            "command": [Path(sys.executable).name, *sys.argv],
            "host": {"python": platform.python_version(), "platform": platform.platform(),
                     "cpu_count": os.cpu_count()},
            "git": git_state(), "data": describe_data(data, origin),
            "targets_of_issue": {
                "best_val": TARGET_VAL, "within_train_s": TARGET_TRAIN_S,
                "stretch_val": STRETCH_VAL, "preset_end_gap": PRESET_END_GAP,
                "app_pace_ratio": APP_PACE_RATIO, "first_char_ms": FIRST_CHAR_MS,
                "kv_cache_speedup": KV_CACHE_SPEEDUP, "beam4_cost": BEAM4_COST},
            "budget": {"total_s": args.total_budget, "planned_s": plan.planned_s,
                       "planned_sum_s": sum(plan.planned_s.values()),
                       "timeout_s": plan.timeout_s},
            "steps": [],
        }
        chosen = set(args.only or STEP_ORDER)
        check.say(f"gpu_check ({check.report['mode']}) on {args.device}: data {data} "
                  f"({origin}), budget {args.total_budget:.0f} s, planned "
                  f"{sum(plan.planned_s.values()):.0f} s → {out}")
        signal.signal(signal.SIGTERM, interrupted)
        try:
            for name in STEP_ORDER:
                check.report["steps"].append(run_step(check, name, chosen))
                if name == "environment" and name in check.measured:
                    check.report["environment"] = check.measured[name]
                check.write_report()
        except KeyboardInterrupt:
            check.report["interrupted"] = True
            check.write_report()
            check.say(f"interrupted; what was measured is in {out}")
            return 130
        summary = check.report["summary"]
        check.say(f"done in {check.report['wall_s']} s: targets {summary['targets_passed']} "
                  f"passed, {summary['targets_failed']} failed, "
                  f"{summary['targets_unmeasured']} unmeasured; steps {summary['steps']}")
        check.log_file.close()
        errors = [s for s in check.report["steps"] if s["status"] == "error"]
        return 1 if errors else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
