"""Does the app keep up with a GPU? The installed ``chargpt-tui`` driven in a real terminal.

On a GPU box the ``gpu`` preset steps ~80 times a second (H200). Every step is an event the app
must take in while it stays responsive. This drives ``chargpt-tui`` in tmux (120×40) as a user
over SSH would — training a preset, a prompt typed now and then while it trains, a pause and a
resume, Ctrl+Q once the run has finished — and alternates it with the same run headless
(``chargpt-tui train``, its rich progress in the same kind of terminal), ``--rounds`` times.

Reported per run, from its ``metrics.jsonl`` and its screen:

* steps/s: steps over the wall time between consecutive steps, evaluations and live samples
  included, leaving out steps that overlap a user pause or a prompt (a prompt parks training on
  purpose); the app / headless ratio is the target (≥ 0.95×);
* time to first character: what each answer's status says (Enter to the first character
  drawn, measured by the app), median and worst (target: median ≤ 50 ms);
* the final and best validation loss, and what the terminal says after the app has gone.

Without a GPU, ``--preset gpu-pace`` (the default) gives the same pace on a CPU. On a GPU box:
``python benchmarks/app_at_gpu_pace.py --preset gpu --device cuda``. One JSON line per
run on stdout, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu_check import read_records
from tmux_terminal import Tmux

from chargpt_tui.bench.harness import cpu_name

WIDTH, HEIGHT = 120, 40
FIRST_CHAR = re.compile(r"first char (\d+) ms")
WARM_UP_STEPS = 20  # steps left out at the start: allocations, caches, the first evaluation
PROMPT_MARGIN = 0.5  # seconds around a prompt left out (the next-character view holds too)
ANSWER_WAIT = 30.0  # seconds for an answer's status to show, at most


@dataclass
class Run:
    kind: str  # "app" or "headless"
    exit_code: int
    wall_s: float  # command start to exit
    steps: int
    steps_per_s: float  # outside pauses and prompts
    final_val: float | None
    best_val: float | None
    best_step: int | None
    first_char_ms: list[float] = field(default_factory=list)
    prompts: int = 0
    unread: int = 0  # answers whose status (with the first-character time) stayed out of view
    paused_s: float = 0.0
    last_words: list[str] = field(default_factory=list)  # the terminal after the command


def last_step(run_dir: Path) -> int:
    steps = [r["step"] for r in read_records(run_dir) if r.get("event") == "StepDone"]
    return steps[-1] if steps else 0


def run_ended(run_dir: Path) -> bool:
    return any(r.get("event") == "StateChanged" and r.get("state") in ("finished", "stopped",
                                                                      "failed")
               for r in read_records(run_dir))


def pauses(recs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """[start, end] wall times of the user's pauses, from the run's own state changes."""
    spans, began = [], None
    for r in recs:
        if r.get("event") != "StateChanged":
            continue
        if r["state"] == "paused":
            began = r["time"]
        elif began is not None:
            spans.append((began, r["time"]))
            began = None
    return spans


def steady_pace(recs: list[dict[str, Any]], left_out: list[tuple[float, float]]) -> float:
    """Steps per second between consecutive steps, skipping any interval touching ``left_out``."""
    steps = [(r["step"], r["time"]) for r in recs
             if r.get("event") == "StepDone" and r["step"] > WARM_UP_STEPS]
    counted, seconds = 0, 0.0
    for (step, begin), (next_step, end) in zip(steps, steps[1:]):
        if next_step != step + 1 or any(a < end and begin < b for a, b in left_out):
            continue
        counted, seconds = counted + 1, seconds + (end - begin)
    return counted / seconds if seconds else 0.0


def evaluations(recs: list[dict[str, Any]]) -> tuple[float | None, float | None, int | None]:
    evals = [r for r in recs if r.get("event") == "EvalDone"]
    if not evals:
        return None, None, None
    return evals[-1]["val_loss"], evals[-1]["best_val_loss"], evals[-1].get("best_step")


def prompt_pane_text(screen: str) -> str:
    """The right-hand (prompt) panel's lines, joined: what a wrapped status line says."""
    lines = [line.split("││", 1)[1] for line in screen.splitlines() if "││" in line]
    return " ".join(line.strip(" │") for line in lines)


def command_line(args: argparse.Namespace, out: Path, headless: bool, status: Path) -> str:
    cli = Path(sys.executable).with_name("chargpt-tui")
    words = [str(cli), *(["train"] if headless else []), "--preset", args.preset,
             "--data", args.data, "--device", args.device, "--out", str(out), *args.option]
    # Stays open after the command, so its last words can be read off the screen.
    return (" ".join(shlex.quote(w) for w in words)
            + f"; echo $? > {shlex.quote(str(status))}; sleep 600")


def drive_app(tmux: Tmux, out: Path, args: argparse.Namespace, rng: random.Random
              ) -> tuple[list[float], list[tuple[float, float]], int, int]:
    """Prompts while training, one pause, then Ctrl+Q after the run ends. Returns the first
    character times, the wall-time spans to leave out, how many prompts were typed and how
    many answers' status lines could not be read."""
    first_chars: list[float] = []
    left_out: list[tuple[float, float]] = []
    deadline = time.monotonic() + args.timeout
    while last_step(out) < 2 * WARM_UP_STEPS:
        if time.monotonic() > deadline:
            raise AssertionError("training never started:\n" + tmux.screen())
        time.sleep(0.1)
    prompts, paused, unread = 0, False, 0
    while not run_ended(out):
        time.sleep(rng.uniform(0.5, 1.5) * args.prompt_every)  # lands anywhere in a step
        if run_ended(out):
            break
        if prompts == args.prompts // 2 and not paused:
            paused = True
            tmux.keys("C-t")
            tmux.wait_for(lambda s: "^t resume" in s, "the paused state")
            time.sleep(1.0)
            tmux.keys("C-t")
            tmux.wait_for(lambda s: "^t pause" in s, "training to resume")
            continue
        if prompts >= args.prompts:
            continue
        prompts += 1
        # Letters only: a character the model does not know would add a warning line.
        marker = f"ROMEO {chr(ord('A') + (prompts - 1) % 26)}:"
        began = time.time()
        tmux.keys(marker, literal=True)
        tmux.keys("Enter")

        def answered(screen: str, marker: str = marker) -> re.Match[str] | None:
            pane = prompt_pane_text(screen)
            at = pane.rfind("› " + marker)
            return FIRST_CHAR.search(pane, at) if at >= 0 else None

        try:
            screen = tmux.wait_for(answered, f"the answer to {marker!r}", timeout=ANSWER_WAIT,
                                   poll=0.05)
        except AssertionError:
            # An answer taller than the transcript keeps its prompt in view and its status
            # below it, out of view: counted, and its time is left out of the pace all the same.
            unread += 1
        else:
            match = answered(screen)
            assert match is not None
            first_chars.append(float(match.group(1)))
        left_out.append((began - PROMPT_MARGIN, time.time() + PROMPT_MARGIN))
        if time.monotonic() > deadline:
            raise AssertionError("the run did not end in time:\n" + tmux.screen())
    tmux.wait_for(lambda s: "finished" in s, "the finished state", timeout=args.timeout)
    tmux.keys("C-q")
    return first_chars, left_out, prompts, unread


def one_run(args: argparse.Namespace, kind: str, rng: random.Random) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        out, status = work / "run", work / "status"
        tmux = Tmux(work / "tmux.sock")
        started = time.monotonic()
        tmux.start(command_line(args, out, kind == "headless", status), WIDTH, HEIGHT)
        try:
            first_chars: list[float] = []
            left_out: list[tuple[float, float]] = []
            prompts = unread = 0
            if kind == "app":
                first_chars, left_out, prompts, unread = drive_app(tmux, out, args, rng)
            code = tmux.wait_for_exit(status, timeout=args.timeout)
            wall = time.monotonic() - started
            time.sleep(0.3)  # the last lines reach the screen
            words = [line.rstrip() for line in tmux.screen().splitlines() if line.strip()]
        finally:
            tmux.kill()
        recs = read_records(out)
        paused = pauses(recs)
        final, best, best_step = evaluations(recs)
        return Run(kind=kind, exit_code=code, wall_s=round(wall, 1), steps=last_step(out),
                   steps_per_s=round(steady_pace(recs, left_out + paused), 2), final_val=final,
                   best_val=best, best_step=best_step, first_char_ms=first_chars,
                   prompts=prompts, unread=unread,
                   paused_s=round(sum(b - a for a, b in paused), 2),
                   last_words=words[-6:])


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "cores": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["cpu"] = cpu_name()
    return info


def summary(runs: list[Run]) -> dict[str, Any]:
    apps = [r for r in runs if r.kind == "app"]
    alone = [r for r in runs if r.kind == "headless"]
    ratios = [a.steps_per_s / h.steps_per_s for a, h in zip(apps, alone) if h.steps_per_s]
    firsts = [ms for r in apps for ms in r.first_char_ms]
    ratio = statistics.median(ratios) if ratios else None
    first = statistics.median(firsts) if firsts else None
    return {
        "app_over_headless_steps_per_s": [round(r, 3) for r in ratios],
        "median_ratio": round(ratio, 3) if ratio is not None else None,
        "ratio_target_met": ratio is not None and ratio >= 0.95,
        "first_char_ms_median": first, "first_char_ms_worst": max(firsts) if firsts else None,
        "answers_unread": sum(r.unread for r in apps),
        "first_char_target_met": first is not None and first <= 50,
        "app_steps_per_s": [r.steps_per_s for r in apps],
        "headless_steps_per_s": [r.steps_per_s for r in alone],
        "final_val": {"app": [r.final_val for r in apps], "headless": [r.final_val for r in alone]},
        "exit_codes": [r.exit_code for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpu-pace", help="gpu on a GPU box")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default="shakespeare", help="a file, a URL or 'shakespeare'")
    parser.add_argument("--option", action="append", default=[],
                        help="one more word for both commands, e.g. --option=--compile")
    parser.add_argument("--rounds", type=int, default=2, help="headless/app pairs, alternated")
    parser.add_argument("--prompts", type=int, default=6, help="prompts typed per app run")
    parser.add_argument("--prompt-every", type=float, default=4.0, help="seconds, on average")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run, at most")
    parser.add_argument("--seed", type=int, default=0, help="when prompts are typed")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(json.dumps({"machine": machine(), "preset": args.preset, "device": args.device,
                      "data": args.data, "terminal": f"tmux {WIDTH}x{HEIGHT}",
                      "options": args.option}),
          flush=True)
    runs = []
    for _ in range(args.rounds):
        for kind in ("headless", "app"):
            run = one_run(args, kind, rng)
            runs.append(run)
            print(json.dumps(asdict(run)), flush=True)
    print(json.dumps({"summary": summary(runs)}), flush=True)


if __name__ == "__main__":
    main()
