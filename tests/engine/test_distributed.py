"""Multi-process training: real ``torchrun`` launches on CPU (gloo), two processes each.

The reference for "DDP is right" is one process trained on the union batch: two ranks with
batch B, seeded seed+0 and seed+1, must end where a single model ends when every micro-step sees
both ranks' batches concatenated (2B samples).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_runs import TINY_MODEL, subprocess_env, torchrun_command, write_text

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.data import get_batch
from chargpt_tui.distributed import _device_for
from chargpt_tui.errors import ConfigError
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer, configure_optimizer, get_lr

SEED = 7
HALF, STEPS = 4, 8
ACCUM = 2  # exercises the micro-steps where DDP must *not* sync gradients
DDP_ARGS = [*TINY_MODEL, "--grad-accum-steps", str(ACCUM), "--lr-decay-iters", str(STEPS),
            "--eval-interval", "1000", "--seed", str(SEED), "--device", "cpu", "--json"]


def reference_parameters(text: Path, out: Path, rank_seeds: list[int], recipe: str = "lecture"
                         ) -> dict[int, dict[str, torch.Tensor]]:
    """Train in this process on the concatenation of the batches drawn with ``rank_seeds``;
    returns the weights after HALF and after STEPS steps."""
    setup = prepare_run(data=str(text), preset="tiny", out=out, device="cpu", overrides={
        "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
        "max_iters": STEPS, "lr_decay_iters": STEPS, "grad_accum_steps": ACCUM, "seed": SEED,
        "recipe": recipe})
    mconf, tconf = setup.model_config, setup.train_config
    torch.manual_seed(tconf.seed)
    model = GPTLanguageModel(mconf)
    optimizer = configure_optimizer(model, tconf, torch.device("cpu"))
    generators = [torch.Generator().manual_seed(seed) for seed in rank_seeds]
    weights = {}
    for step in range(tconf.max_iters):
        for group in optimizer.param_groups:  # as the Trainer does: Muon's groups peak elsewhere
            peak = tconf.muon_lr if group.get("muon") else tconf.learning_rate
            group["lr"] = peak * get_lr(step, tconf) / tconf.learning_rate
        for _ in range(tconf.grad_accum_steps):
            batches = [get_batch(setup.data.train, mconf.block_size, tconf.batch_size, g)
                       for g in generators]
            x = torch.cat([x for x, _ in batches])
            y = torch.cat([y for _, y in batches])
            _, loss = model(x, y)
            (loss / tconf.grad_accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tconf.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 in (HALF, STEPS):
            weights[step + 1] = {k: v.clone() for k, v in model.state_dict().items()}
    return weights


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def run_two_processes(text: Path, out: Path, steps: int, *extra: str) -> dict:
    """A real 2-process torchrun; returns rank 0's checkpoint."""
    done = subprocess.run(
        torchrun_command(2, "--data", str(text), *DDP_ARGS, "--max-iters", str(steps),
                         "--out", str(out), *extra),
        capture_output=True, text=True, timeout=120, env=subprocess_env(out.parent / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    # --json: one result object, from rank 0 only
    json_lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1, done.stdout
    assert json.loads(json_lines[0])["step"] == steps
    payload = load_checkpoint(out)
    assert payload["step"] == steps
    record = payload["distributed"]
    assert record["world_size"] == 2
    assert record["rank_steps"] == [steps, steps]
    assert record["max_parameter_drift"] == 0.0  # rank 1's weights equal rank 0's, bit for bit
    return payload


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["lecture", "fast"])
def test_two_processes_equal_one_process_on_the_union_batch_across_a_resume(
        tmp_path: Path, recipe: str) -> None:
    text = write_text(tmp_path)
    union = reference_parameters(text, tmp_path / "ref", [SEED, SEED + 1], recipe)

    out = tmp_path / "ddp"
    first = run_two_processes(text, out, HALF, "--recipe", recipe)
    rank_rng = first["distributed"]["rank_rng"]
    assert not torch.equal(rank_rng[0]["data"], rank_rng[1]["data"])  # each rank its own batches
    assert max_difference(first["model"], union[HALF]) < 1e-5

    # every rank resumes from the checkpoint, rank 1 with its own batch stream
    resumed = run_two_processes(text, out, STEPS, "--resume", str(out))
    assert max_difference(resumed["model"], union[STEPS]) < 1e-5
    # ...and rank 1's batches mattered: training on rank 0's batches alone ends elsewhere
    rank0_only = reference_parameters(text, tmp_path / "ref0", [SEED, SEED], recipe)
    assert max_difference(resumed["model"], rank0_only[STEPS]) > 1e-3


@pytest.mark.slow
def test_resuming_a_single_process_run_on_two_processes(tmp_path: Path) -> None:
    text = write_text(tmp_path)
    out = tmp_path / "run"
    setup = prepare_run(data=str(text), preset="tiny", out=out, device="cpu", overrides={
        "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
        "max_iters": 2, "eval_iters": 2})
    Trainer(setup).run()
    assert "distributed" not in load_checkpoint(out)

    resumed = run_two_processes(text, out, HALF, "--resume", str(out))
    notices = [e["message"] for e in _events(out / "metrics.jsonl") if e["event"] == "Notice"]
    assert notices == ["the checkpoint was saved by 1 process(es), this run has 2: ranks after 0 "
                       "start new batch streams"]
    rank_rng = resumed["distributed"]["rank_rng"]
    assert not torch.equal(rank_rng[0]["data"], rank_rng[1]["data"])


def _worker_pids(parent: int) -> list[int]:
    """Child processes of ``parent`` (Linux /proc)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(pid) for pid in children.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _events(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]


def _rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).removeprefix(b"RANK="))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through /proc")
@pytest.mark.parametrize(("target", "reason"), [
    ("torchrun", "received SIGTERM"),  # torchrun passes it on to every worker
    ("rank 1", "another process of the run was stopped"),  # rank 0 learns it from rank 1
])
def test_sigterm_stops_every_rank_at_one_step_with_one_checkpoint(
        tmp_path: Path, target: str, reason: str) -> None:
    text = write_text(tmp_path)
    out = tmp_path / "run"
    command = torchrun_command(2, "--data", str(text), *TINY_MODEL, "--max-iters", "1000000",
                               "--eval-interval", "1000000", "--device", "cpu", "--out", str(out))
    log_path = tmp_path / "torchrun.log"
    workers: list[int] = []
    # output to a file, not a pipe: a hung worker would hold a pipe open and block the test
    with log_path.open("w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    env=subprocess_env(tmp_path / "cache"))
    try:
        deadline = time.monotonic() + 60
        while not any(e["event"] == "StepDone" for e in _events(out / "metrics.jsonl")):
            assert launcher.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        workers = _worker_pids(launcher.pid)
        assert sorted(map(_rank_of, workers)) == [0, 1]
        if target == "torchrun":
            launcher.send_signal(signal.SIGTERM)
        else:
            os.kill(next(pid for pid in workers if _rank_of(pid) == 1), signal.SIGTERM)
        launcher.wait(timeout=60)
        left_running = [pid for pid in workers if _alive(pid)]
    finally:  # never leave processes behind, even when an assertion failed
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    output = log_path.read_text()

    assert not left_running, output[-3000:]  # nothing hanging
    events = _events(out / "metrics.jsonl")
    saves = [e for e in events if e["event"] == "CheckpointSaved"]
    assert [s["reason"] for s in saves] == ["stop"], output[-3000:]
    assert events[-1]["event"] == "StateChanged"
    assert events[-1]["state"] == "stopped"
    assert events[-1]["reason"] == reason
    payload = load_checkpoint(out)
    assert payload["step"] == saves[0]["step"] > 0
    assert payload["distributed"]["rank_steps"] == [payload["step"]] * 2
    assert payload["distributed"]["max_parameter_drift"] == 0.0
    assert not list(out.glob(".*.tmp"))
    # rank 1 trained silently: the one progress header comes from rank 0
    assert output.count("training 1x16") == 1


def test_each_process_takes_the_device_of_its_local_rank() -> None:
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert _device_for("auto", 0) == expected
    assert _device_for("cpu", 1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="cannot be used under torchrun"):
        _device_for("cuda:1", 0)
    with pytest.raises(ConfigError, match="unknown device"):
        _device_for("tpu", 0)
    with pytest.raises(ConfigError, match="does not support MPS"):
        _device_for("mps", 0)


EXIT_PROBE = """
import atexit, sys
from chargpt_tui.cli import main
atexit.register(lambda: print("interpreter shut down", file=sys.stderr))
sys.stdout.write("x" * 100_000)  # block-buffered into a pipe: lost unless flushed
main(["sample", "--checkpoint", sys.argv[1]])
"""


@pytest.mark.slow
@pytest.mark.parametrize("under_torchrun", [True, False])
def test_a_torchrun_process_ends_without_the_interpreter_shutdown_that_can_abort_it(
        tmp_path: Path, under_torchrun: bool) -> None:
    """Gloo threads can abort a finished run during the interpreter's shutdown, so a torchrun
    process skips it (torchrun.exit_worker), keeping its exit code and everything it printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if under_torchrun:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE, str(tmp_path / "missing.pt")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "x" * 100_000
    assert "missing.pt" in done.stderr  # the one-line error still reaches the user
    assert ("interpreter shut down" in done.stderr) is not under_torchrun
