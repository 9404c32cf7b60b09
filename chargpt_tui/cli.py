"""The ``chargpt-tui`` command line: one typer command per verb.

Heavy modules (torch, textual) are imported inside the commands that need them, so ``--help``
stays instant. Every :class:`~chargpt_tui.errors.UserError` becomes one red line on stderr and a
non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import typer.core

from chargpt_tui.presets import PRESET_NAMES, RECIPE_NAMES

try:  # recent typer releases vendor click; older ones depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError  # type: ignore[assignment]

if TYPE_CHECKING:
    from rich.table import Table

    from chargpt_tui.runs import RunInfo
    from chargpt_tui.tui.sources import Source

T = TypeVar("T")

# torch prints a warning at import when NumPy is absent; chargpt-tui never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


def _flags_show_no_type() -> None:
    """List flags in every command's help without a type: ``--debug``, not ``--debug  <bool>``.

    A flag takes no value, so click's plain help and typer 0.27's rich help leave its type
    column empty; typer 0.29's rich help fills it with ``<bool>``, ``--help`` included. This
    restores the empty column for every flag, ``--mouse/--no-mouse`` pairs too; options that
    take a value keep their type."""
    option = typer.core.TyperOption
    show_type = getattr(option, "display_type_rich", None)  # typer 0.27 has none (and no <bool>)
    if show_type is None or getattr(show_type, "flags_show_no_type", False):
        return

    @functools.wraps(show_type)
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag else show_type(self, ctx)

    setattr(display_type_rich, "flags_show_no_type", True)  # noqa: B010
    setattr(option, "display_type_rich", display_type_rich)  # noqa: B010


_flags_show_no_type()

APP_HELP = ("`chargpt-tui` with no command opens the app, the same as `chargpt-tui tui`, and "
            "takes these options (`chargpt-tui tui --help` lists them too).")


class RootGroup(typer.core.TyperGroup):
    """The top-level help: the commands, then the app's own options under its own usage line
    (``chargpt-tui [OPTIONS]`` runs ``tui``, see :func:`run_command_line`). They are rendered
    from the ``tui`` command itself, so the two helps cannot drift apart."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        tui = self.get_command(ctx, "tui")
        if tui is None:  # pragma: no cover - tui is always registered
            return
        view = copy.copy(tui)
        view.help = APP_HELP
        view.add_help_option = False  # listed once, in the Options above
        view.format_help(ctx.__class__(view, info_name=ctx.info_name), formatter)


app = typer.Typer(
    name="chargpt-tui",
    cls=RootGroup,
    help="Train a character-level GPT in your terminal and talk to it while it learns.\n\n"
    "Run with no command to open the app (same as `chargpt-tui tui`); its options follow the "
    "commands below.",
    no_args_is_help=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

STATE = {"debug": False, "trained": False}  # trained: a headless run has ended (see main)


# -- shared options -----------------------------------------------------------------------------

Data = Annotated[str | None, typer.Option(
    help="Training text: 'shakespeare' (default, downloaded once), 'python-stdlib', a file path, "
    "a folder (every text file under it, sorted by path, joined by a blank line; hidden files "
    "and binaries left out) or an http(s) URL. Encoded once and cached; later runs start at "
    "once.", rich_help_panel="Data")]
Encoding = Annotated[str, typer.Option(help="Text encoding of a --data file.",
                                       rich_help_panel="Data")]
Meta = Annotated[Path | None, typer.Option(
    help="A nanoGPT checkpoint's meta.pkl (its characters), when it is not in "
    "data/<dataset>/ under this folder or beside the checkpoint, where nanoGPT's sample.py "
    "and chargpt-tui look.")]
Preset = Annotated[str, typer.Option(
    help=f"Model/training shape: {', '.join(PRESET_NAMES)}. 'auto' picks gpu on CUDA, else cpu.",
    rich_help_panel="Model")]
NLayer = Annotated[int | None, typer.Option(help="Transformer blocks.", rich_help_panel="Model")]
NHead = Annotated[int | None, typer.Option(help="Attention heads per block.",
                                           rich_help_panel="Model")]
NEmbd = Annotated[int | None, typer.Option(help="Embedding width (divisible by --n-head).",
                                           rich_help_panel="Model")]
BlockSize = Annotated[int | None, typer.Option(help="Context length in characters.",
                                               rich_help_panel="Model")]
Dropout = Annotated[float | None, typer.Option(help="Dropout probability during training.",
                                               rich_help_panel="Model")]
Attention = Annotated[str | None, typer.Option(
    help="Attention implementation: 'fused' (fast) or 'heads' (the lecture's per-head modules).",
    rich_help_panel="Model")]
BatchSize = Annotated[int | None, typer.Option(help="Sequences per step.",
                                               rich_help_panel="Training")]
LearningRate = Annotated[float | None, typer.Option(help="Peak learning rate (warmup, cosine).",
                                                    rich_help_panel="Training")]
MaxIters = Annotated[int | None, typer.Option(help="Train until this step.",
                                              rich_help_panel="Training")]
LrDecayIters = Annotated[int | None, typer.Option(
    help="Step where the cosine decay ends (default --max-iters; kept from the checkpoint "
    "when resuming).", rich_help_panel="Training")]
GradAccumSteps = Annotated[int | None, typer.Option(
    help="Micro-batches per optimizer step (a larger effective batch in the same memory).",
    rich_help_panel="Training")]
EvalInterval = Annotated[int | None, typer.Option(help="Evaluate and checkpoint every N steps.",
                                                  rich_help_panel="Training")]
EvalIters = Annotated[int | None, typer.Option(help="Batches per loss estimate.",
                                               rich_help_panel="Training")]
Seed = Annotated[int | None, typer.Option(help="Seed for weights and batches (default 1337).",
                                          rich_help_panel="Training")]
Compile = Annotated[bool | None, typer.Option(
    "--compile/--no-compile", help="torch.compile the model (falls back to eager on failure).",
    rich_help_panel="Training")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.",
                                     rich_help_panel="Training")]
Out = Annotated[Path | None, typer.Option(
    help="Run folder for ckpt.pt and metrics.jsonl (default runs/<time>; runs/latest links "
    "to the newest).", rich_help_panel="Checkpoints")]
Resume = Annotated[Path | None, typer.Option(
    help="Continue from a checkpoint file or run folder, exactly where it stopped.",
    rich_help_panel="Checkpoints")]
Threads = Annotated[int | None, typer.Option(
    help="CPU threads for torch (default: all cores).", rich_help_panel="Training")]
Patience = Annotated[int | None, typer.Option(
    help="Stop after this many evaluations without a new best val loss (0 = never). Either way "
    "the model ends on its best weights.", rich_help_panel="Training")]
TimeBudget = Annotated[str | None, typer.Option(
    help="Finish within this wall-clock time (e.g. 5m, 90s, 1h), start-up included: the "
    "schedule is fitted to it. Replaces --max-iters.", rich_help_panel="Training")]
HistoryKeep = Annotated[int | None, typer.Option(
    help="Weight snapshots kept in the run's history/ folder (one per evaluation, thinned "
    "evenly), for the app's views to step through with [ and ]; 0 keeps none. Default 12.",
    rich_help_panel="Training")]
Recipe = Annotated[str | None, typer.Option(
    help=f"Which parts to train with: {' or '.join(RECIPE_NAMES)} (fast: rotary positions, "
    "QK-norm, Muon, a warmup-stable-decay schedule). The preset picks one; the options below "
    "switch single parts.", rich_help_panel="Recipe")]
Rope = Annotated[bool | None, typer.Option(
    "--rope/--no-rope", help="Rotary positions instead of a learned position table.",
    rich_help_panel="Recipe")]
QkNorm = Annotated[bool | None, typer.Option(
    "--qk-norm/--no-qk-norm", help="Normalise queries and keys in every head.",
    rich_help_panel="Recipe")]
Optimizer = Annotated[str | None, typer.Option(
    help="adamw, or muon (Muon for the blocks' matrices, AdamW for the rest).",
    rich_help_panel="Recipe")]
MuonLr = Annotated[float | None, typer.Option(help="Muon's peak learning rate.",
                                              rich_help_panel="Recipe")]
Schedule = Annotated[str | None, typer.Option(
    help="cosine, or wsd (warmup, flat, linear cooldown over the last --cooldown-frac).",
    rich_help_panel="Recipe")]
CooldownFrac = Annotated[float | None, typer.Option(help="wsd: the share of the run cooling down.",
                                                    rich_help_panel="Recipe")]
Precision = Annotated[str | None, typer.Option(
    help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32.", rich_help_panel="Recipe")]


def training_overrides(**options: Any) -> dict[str, Any]:
    """The options the user gave (typer passes None for the rest)."""
    return {k: v for k, v in options.items() if v is not None}


# The options `train` and `tui` share, in --help order: written once, so the two commands cannot
# drift apart. name → (typer annotation, default).
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "data": (Data, None),
    "encoding": (Encoding, "utf-8"),
    "preset": (Preset, "auto"),
    "n_layer": (NLayer, None),
    "n_head": (NHead, None),
    "n_embd": (NEmbd, None),
    "block_size": (BlockSize, None),
    "dropout": (Dropout, None),
    "attention": (Attention, None),
    "batch_size": (BatchSize, None),
    "learning_rate": (LearningRate, None),
    "max_iters": (MaxIters, None),
    "lr_decay_iters": (LrDecayIters, None),
    "grad_accum_steps": (GradAccumSteps, None),
    "eval_interval": (EvalInterval, None),
    "eval_iters": (EvalIters, None),
    "seed": (Seed, None),
    "compile": (Compile, None),
    "patience": (Patience, None),
    "time_budget": (TimeBudget, None),
    "history_keep": (HistoryKeep, None),
    "recipe": (Recipe, None),
    "rope": (Rope, None),
    "qk_norm": (QkNorm, None),
    "optimizer": (Optimizer, None),
    "muon_lr": (MuonLr, None),
    "schedule": (Schedule, None),
    "cooldown_frac": (CooldownFrac, None),
    "precision": (Precision, None),
    "device": (Device, "auto"),
    "threads": (Threads, None),
    "out": (Out, None),
    "resume": (Resume, None),
}
# Everything else in RUN_OPTIONS overrides the preset (or the resumed checkpoint).
NOT_OVERRIDES = ("data", "encoding", "preset", "device", "threads", "out", "resume")
# The overrides that `tui --lecture` takes too (it refuses the others): as `lecture`'s options.
LECTURE_OPTIONS = ("time_budget", "max_iters", "eval_iters", "seed")


@dataclass
class RunOptions:
    """What a command decorated with :func:`with_run_options` receives as ``run``."""

    data: str | None
    encoding: str
    preset: str
    device: str
    threads: int | None
    out: Path | None
    resume: Path | None
    overrides: dict[str, Any]


def with_run_options(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command every option in :data:`RUN_OPTIONS`, collected into its ``run`` argument.

    typer reads a command's options from its signature, so the wrapper shows typer the shared
    options followed by the command's own ones (all but ``run``)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.name != "run"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                annotation=annotation)
              for name, (annotation, default) in RUN_OPTIONS.items()]
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in shared + own]

    @functools.wraps(command)
    def wrapper(**values: Any) -> T:
        given = {name: values.pop(name) for name in RUN_OPTIONS}
        overrides = training_overrides(**{k: v for k, v in given.items()
                                           if k not in NOT_OVERRIDES})
        run = RunOptions(**{k: given[k] for k in NOT_OVERRIDES}, overrides=overrides)
        return command(run=run, **values)

    setattr(wrapper, "__signature__", inspect.Signature(parameters))  # noqa: B010
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


# -- error handling ------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console

    world_size = os.environ.get("WORLD_SIZE", "1")
    # under torchrun every process may report: say which one
    rank = (_escape(f"[rank {os.environ.get('RANK')}] ")
            if world_size.isdigit() and int(world_size) > 1 else "")
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {rank}{message}",
                                                markup=True, soft_wrap=True)
    return typer.Exit(code)


def run_guarded(function: Any) -> Any:
    """Call ``function``; turn user-facing failures into one line and an exit code."""
    from chargpt_tui.errors import UserError

    try:
        return function()
    except UserError as error:
        if STATE["debug"]:
            raise
        raise fail(_escape(str(error)), 2) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except BrokenPipeError:
        # The reader went away (`| head`, a dropped SSH session): stop quietly, like `cat` does.
        from chargpt_tui.exit_codes import EXIT_OUTPUT_CLOSED
        from chargpt_tui.headless import silence_stdout

        silence_stdout()
        raise typer.Exit(EXIT_OUTPUT_CLOSED) from None
    except Exception as error:
        message = out_of_memory_message(error)
        if message and not STATE["debug"]:
            raise fail(message) from None
        raise


def out_of_memory_message(error: Exception) -> str | None:
    """One line for running out of GPU memory or RAM (a size the user chose), else None."""
    import torch

    text = str(error).lower()
    if isinstance(error, torch.OutOfMemoryError) or (
            isinstance(error, RuntimeError) and "out of memory" in text):
        return ("out of GPU memory — try a smaller --batch-size or --preset cpu, or --device cpu "
                "(the last saved checkpoint is kept)")
    if isinstance(error, MemoryError) or "can't allocate memory" in text:
        return ("out of memory (RAM) — try a smaller --batch-size, --n-embd, --n-layer or "
                "--block-size, or --preset tiny (the last saved checkpoint is kept)")
    return None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def notice(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[yellow]note:[/] {_escape(message)}",
                                                soft_wrap=True)


# -- commands ------------------------------------------------------------------------------------


def show_version(asked: bool) -> None:
    """Eager: runs while parsing, so `chargpt-tui --version` needs no command."""
    if asked:
        from chargpt_tui import __version__

        typer.echo(f"chargpt-tui {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True, callback=show_version)
    ] = False,
) -> None:
    """Train a character-level GPT in your terminal and talk to it while it learns."""
    STATE["debug"] = debug


@app.command()
@with_run_options
def train(
    run: RunOptions,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end "
                                          "instead of progress.")] = False,
) -> None:
    """Train headless with a progress bar; Ctrl+C, SIGTERM or SIGHUP save a checkpoint first.

    Example: chargpt-tui train --max-iters 2000, then chargpt-tui sample --checkpoint runs/latest.
    Several GPUs or machines: torchrun --nproc_per_node=N -m chargpt_tui train ...
    """

    def go() -> None:
        from chargpt_tui.device import process_started, set_torch_threads

        set_torch_threads(run.threads)
        from chargpt_tui import distributed
        from chargpt_tui.headless import (
            download_progress,
            encoding_progress,
            run_headless_training,
        )
        from chargpt_tui.run_setup import prepare_run

        # under torchrun: join the process group; only rank 0 speaks (see distributed.py)
        with distributed.launch(run.device) as launch:
            shown = not as_json and launch.is_main
            with download_progress(enabled=shown) as progress, \
                    encoding_progress(enabled=shown) as encode_progress:
                setup = launch.leader_first(lambda: prepare_run(
                    data=run.data, preset=run.preset, overrides=run.overrides, out=run.out,
                    resume=run.resume, device=launch.device, encoding=run.encoding,
                    progress=progress, encode_progress=encode_progress,
                    notice=notice if launch.is_main else None))
            setup.started = process_started()  # a --time-budget counts the start-up too
            result = run_headless_training(setup, as_json=as_json)
            STATE["trained"] = True
        if as_json and launch.is_main:
            typer.echo(json.dumps(result.to_dict()))
        if result.exit_code:
            raise typer.Exit(result.exit_code)

    run_guarded(go)


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Option(
        help="Checkpoint file or run folder (chargpt-tui's, or nanoGPT's ckpt.pt).")] = Path(
        "runs/latest"),
    prompt: Annotated[str, typer.Option(help="Text to continue ('' starts from a newline).")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Characters to generate.")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more surprising.")
                           ] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample only among the k likeliest.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling threshold in (0, 1].")
                     ] = None,
    beam_width: Annotated[int, typer.Option(help="1 = sampling; 2+ = beam search.")] = 1,
    no_repeat_ngram: Annotated[int, typer.Option(
        help="Beam search: never repeat an n-gram of this many characters (0 = off; try 10).")
    ] = 0,
    context_policy: Annotated[str, typer.Option(
        help="Past the context window: 'refill' (fast) or 'exact' (re-run the window each "
        "character).")] = "refill",
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples.")] = None,
    device: Device = "auto",
    threads: Threads = None,
    meta: Meta = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of "
                                          "streaming text.")] = False,
) -> None:
    """Continue a prompt from a trained checkpoint, streaming the text as it is generated."""

    def go() -> None:
        from chargpt_tui.device import set_torch_threads

        set_torch_threads(threads)
        from chargpt_tui.headless import run_sample
        from chargpt_tui.sampling import SamplingParams

        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, beam_width=beam_width, no_repeat_ngram=no_repeat_ngram,
            context_policy=context_policy)
        run_sample(checkpoint, prompt, params, device=device, as_json=as_json, notice=notice,
                   meta=meta)

    run_guarded(go)


@app.command()
@with_run_options
def tui(
    run: RunOptions,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Open a trained checkpoint to chat with, without training (also nanoGPT's "
        "ckpt.pt).")] = None,
    meta: Meta = None,
    follow: Annotated[Path | None, typer.Option(
        metavar="RUN_DIR",
        help="Watch a run trained elsewhere (`chargpt-tui train`, rank 0 of a distributed "
        "run) through its metrics.jsonl, and prompt its latest checkpoint. Read only.")] = None,
    compare: Annotated[list[Path] | None, typer.Option(
        metavar="RUN_DIR",
        help="Lay other runs' curves over the chart: repeat it for several runs, or give a "
        "sweep or lecture folder for all of its runs (F10 changes it).")] = None,
    mouse: Annotated[bool, typer.Option(
        "--mouse/--no-mouse", help="--no-mouse keeps your terminal's own text selection.")
    ] = True,
    lecture: Annotated[bool, typer.Option(
        "--lecture", help="Replay the lecture live: its models trained in order (as `chargpt-tui "
        "lecture`), each rung's val beside the lecture's, prompts on the rung in training. "
        "Takes --time-budget, --max-iters, --eval-iters, --seed, --data and --out.",
        rich_help_panel="Lecture")] = False,
    through: Annotated[str | None, typer.Option(
        help="With --lecture: stop after this rung (bigram … layernorm, scaled; default "
        "scaled on a GPU, layernorm on a CPU).", rich_help_panel="Lecture")] = None,
    scaled_budget: Annotated[str | None, typer.Option(
        help="With --lecture: wall-clock time for the scaled rung alone (e.g. 10m).",
        rich_help_panel="Lecture")] = None,
) -> None:
    """Open the app: watch training live and prompt the model while it learns (the default)."""
    if not (sys.stdout.isatty() and sys.stdin.isatty()) and not os.environ.get(
            "CHARGPT_TUI_FORCE_TUI"):
        raise fail("chargpt-tui's app needs a terminal (stdout/stdin are not a TTY) — "
                   "use `chargpt-tui train` for headless training", 2)

    def go() -> int:
        from chargpt_tui.device import set_torch_threads
        from chargpt_tui.explain import compare_label, run_curves
        from chargpt_tui.headless import download_progress, encoding_progress
        from chargpt_tui.tui.launch import resolve_source, run_app

        set_torch_threads(run.threads)
        # Read before the screen opens: a wrong folder is one line, not a broken chart.
        from chargpt_tui.sweep import compared_runs

        curves = [(compare_label(run), run_curves(run)) for run in compared_runs(compare or [])]
        if lecture or through or scaled_budget:
            source: Source = lecture_source()
        else:
            with download_progress() as progress, encoding_progress() as encode_progress:
                source = resolve_source(data=run.data, encoding=run.encoding,
                                        preset=run.preset, overrides=run.overrides,
                                        out=run.out, resume=run.resume,
                                        device=run.device, checkpoint=checkpoint,
                                        follow=follow, progress=progress,
                                        encode_progress=encode_progress, meta=meta)
        code, farewell = run_app(source, device=run.device, mouse=mouse, compare=curves)
        for line in farewell:  # the screen is gone: where things are, what to run next
            typer.echo(line)
        return code

    def lecture_source() -> Source:
        """--lecture: checked as `chargpt-tui lecture` checks it, before the screen opens."""
        from chargpt_tui.durations import parse_duration
        from chargpt_tui.errors import ConfigError
        from chargpt_tui.headless import download_progress
        from chargpt_tui.tui.launch import resolve_lecture

        if not lecture:
            raise ConfigError("--through and --scaled-budget replay the lecture: add --lecture")
        if checkpoint is not None or follow is not None or run.resume is not None:
            raise ConfigError("--lecture trains the lecture's rungs here: leave out "
                              "--checkpoint, --follow and --resume")
        settings = dict(run.overrides)
        options = {name: settings.pop(name, None) for name in LECTURE_OPTIONS}
        if settings or run.preset != "auto":
            given = ", ".join("--" + name.replace("_", "-")
                              for name in [*(["preset"] if run.preset != "auto" else []),
                                           *settings])
            raise ConfigError(f"--lecture trains with the lecture's own settings: leave out "
                              f"{given}", "it takes --time-budget, --max-iters, --eval-iters, "
                              "--seed, --data and --out")
        budget = options["time_budget"]
        with download_progress() as progress:
            return resolve_lecture(
                through=through, data=run.data, encoding=run.encoding, device=run.device,
                out=run.out, seed=1337 if options["seed"] is None else options["seed"],
                time_budget=parse_duration(budget) if budget else None,
                scaled_budget=parse_duration(scaled_budget) if scaled_budget else None,
                max_iters=options["max_iters"], eval_iters=options["eval_iters"],
                threads=run.threads, progress=progress, notice=notice)

    code = run_guarded(go)
    if code:
        raise typer.Exit(code)


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint file or run folder.")] = Path(
        "runs/latest"),
    text: Annotated[str | None, typer.Option(help="The text to score.")] = None,
    file: Annotated[Path | None, typer.Option(help="Score this file's text instead.")] = None,
    stride: Annotated[int | None, typer.Option(
        help="Past the context: a new window every N characters (default half the context; "
        "smaller gives each character more context).")] = None,
    top_k: Annotated[int, typer.Option(help="Guesses kept per character.")] = 5,
    device: Device = "auto",
    meta: Meta = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every "
                                          "character's loss and the model's guesses.")] = False,
) -> None:
    """Show how surprised the model is by each character of a text (its loss, coloured).

    Green: the model was sure and right. Red: it did no better than a uniform guess.
    """

    def go() -> None:
        from chargpt_tui.errors import UserError
        from chargpt_tui.explain_view import run_explain

        if (text is None) == (file is None):
            raise UserError("give the text to score with --text or --file (one of them)")
        body = text
        if file is not None:
            try:
                body = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise UserError(f"cannot read {file}: {error}") from None
        assert body is not None  # one of the two was given (checked above)
        run_explain(checkpoint, body, stride=stride, top_k=top_k, device=device,
                    as_json=as_json, notice=notice, meta=meta)

    run_guarded(go)


@app.command()
def runs(
    root: Annotated[Path, typer.Argument(help="Folder that holds the run folders.")] = Path(
        "runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")
                       ] = False,
) -> None:
    """List training runs, newest first: steps, best validation loss, size, data."""

    def go() -> None:
        from chargpt_tui.runs import list_runs

        found = list_runs(root)
        if as_json:
            typer.echo(json.dumps([run.to_dict() for run in found]))
        elif not found:
            notice(f"no runs in {root} yet — start one with: chargpt-tui train --out {root}/NAME")
        else:
            from rich.console import Console

            Console().print(runs_table(found))

    run_guarded(go)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(
        "--quick", help="A shorter run (two repeats, shorter windows and texts); it says "
        "what it shrinks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of "
                                          "tables.")] = False,
    device: Device = "auto",
    threads: Threads = None,
    tiny: Annotated[bool, typer.Option("--tiny", hidden=True,
                                       help="Test-sized shapes (for the test suite).")] = False,
    case: Annotated[list[str] | None, typer.Option(
        "--case", help="Run only this case (repeatable), by its key in the --json report: "
        "training, sampling, beam_search, ...; default all.")] = None,
) -> None:
    """Measure the project's speed claims side by side, with pass/fail against its targets.

    Times training, sampling, beam search, first-character latency, the app's cost and start-up.

    Variants alternate in one process; each target is checked on a ratio from the same run.
    """

    def go() -> None:
        import torch

        from chargpt_tui.device import set_torch_threads

        # One thread count for every variant: the trainer's own choice times a few steps in each
        # fresh run, so runs could differ, and a ratio would compare thread counts, not code.
        set_torch_threads(torch.get_num_threads() if threads is None else threads)
        from rich.console import Console

        from chargpt_tui.bench.runner import CASES, print_report, run_bench
        from chargpt_tui.errors import UserError

        unknown = [name for name in case or [] if name not in CASES]
        if unknown:
            raise UserError(f"unknown bench case {unknown[0]!r}", f"use {', '.join(CASES)}")
        progress = Console(stderr=True, highlight=False)
        report = run_bench(mode="tiny" if tiny else "quick" if quick else "full", device=device,
                           log=lambda message: progress.print(f"[dim]bench:[/] {message}"),
                           cases={name: CASES[name] for name in case} if case else None)
        if as_json:
            typer.echo(json.dumps(report))
        else:
            print_report(report)

    run_guarded(go)


@app.command()
def lecture(
    through: Annotated[str | None, typer.Option(
        help="Stop after this rung: bigram, one-head, multi-head, feedforward, residual, "
        "layernorm or scaled (default: scaled on a GPU, layernorm on a CPU).")] = None,
    time_budget: Annotated[str | None, typer.Option(
        help="Wall-clock time for the whole ladder (e.g. 3m), shared by the rungs in "
        "proportion to their cost; a rung that ends early leaves its time to the next.")
    ] = None,
    scaled_budget: Annotated[str | None, typer.Option(
        help="Wall-clock time for the scaled rung alone (e.g. 10m): how to try it on a CPU.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for every rung's weights and batches.")
                    ] = 1337,
    max_iters: Annotated[int | None, typer.Option(
        help="Cap every rung at this many steps (a quick look; the lecture's are 3000/5000).")
    ] = None,
    eval_iters: Annotated[int | None, typer.Option(
        help="Cap the batches per loss estimate (the lecture's are 200).")] = None,
    rung_max_iters: Annotated[str | None, typer.Option(
        hidden=True, help="Per-rung caps, e.g. bigram=5,one-head=100000 (for tests).")] = None,
    data: Data = None,
    encoding: Encoding = "utf-8",
    device: Device = "auto",
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for torch (default: 1 for the small rungs, all cores for scaled).",
        rich_help_panel="Training")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the rungs' run folders and ladder.json (default runs/lecture-<time>).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end "
                                          "instead of the table and samples.")] = False,
) -> None:
    """Replay the lecture: train its models in order, each beside the val loss it reported.

    Each rung is a normal run folder: chargpt-tui runs / sample / explain work on it.
    Ctrl+C stops the rung in training (it saves) and keeps the finished ones.
    """

    def go() -> int:
        from chargpt_tui.device import set_torch_threads

        set_torch_threads(threads)
        from chargpt_tui.durations import parse_duration
        from chargpt_tui.errors import UserError
        from chargpt_tui.headless import download_progress
        from chargpt_tui.lecture_view import run_lecture

        caps: int | dict[str, int] | None = max_iters
        if rung_max_iters:
            try:
                caps = {name: int(n) for name, _, n in
                        (part.partition("=") for part in rung_max_iters.split(","))}
            except ValueError:
                raise UserError("--rung-max-iters takes RUNG=N,... (e.g. bigram=5)") from None
        with download_progress(enabled=not as_json) as progress:
            return run_lecture(
                through=through, data=data, encoding=encoding, device=device, out=out,
                seed=seed, time_budget=parse_duration(time_budget) if time_budget else None,
                scaled_budget=parse_duration(scaled_budget) if scaled_budget else None,
                max_iters=caps, eval_iters=eval_iters, threads=threads, as_json=as_json,
                progress=progress, notice=notice)

    code = run_guarded(go)
    if code:
        raise typer.Exit(code)


def _axis_option(what: str) -> Any:
    return typer.Option(help=f"{what}: one value or a comma list to sweep.",
                        rich_help_panel="Grid")


@app.command()
def sweep(
    learning_rate: Annotated[str | None, _axis_option("Peak learning rates")] = None,
    batch_size: Annotated[str | None, _axis_option("Batch sizes")] = None,
    n_embd: Annotated[str | None, _axis_option("Embedding widths")] = None,
    n_layer: Annotated[str | None, _axis_option("Transformer block counts")] = None,
    block_size: Annotated[str | None, _axis_option("Context lengths")] = None,
    dropout: Annotated[str | None, _axis_option("Dropout probabilities")] = None,
    preset: Preset = "auto",
    recipe: Recipe = None,
    n_head: NHead = None,
    max_iters: MaxIters = None,
    time_budget: Annotated[str | None, typer.Option(
        help="Wall-clock time for each point (e.g. 2m), start-up included.",
        rich_help_panel="Training")] = None,
    eval_interval: EvalInterval = None,
    eval_iters: EvalIters = None,
    seed: Seed = None,
    data: Data = None,
    encoding: Encoding = "utf-8",
    device: Device = "auto",
    threads: Threads = None,
    parallel: Annotated[int, typer.Option(
        help="Points trained at once, as processes on one GPU (on a CPU they run one after "
        "another).")] = 1,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the points' run folders and sweep.json (default runs/sweep-<time>).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end "
                                          "instead of the leaderboard.")] = False,
) -> None:
    """Train a small grid of settings, each point a normal run folder, and rank them.

    Example: chargpt-tui sweep --preset tiny --learning-rate 1e-3,3e-3 --n-embd 32,64
    --time-budget 1m. A failed point is reported and the sweep goes on; Ctrl+C lets the
    point in training save, and keeps the finished ones.
    """

    def go() -> int:
        from chargpt_tui.device import pick_device
        from chargpt_tui.sweep import parse_axis
        from chargpt_tui.sweep_view import run_sweep

        lists = {"learning_rate": learning_rate, "batch_size": batch_size, "n_embd": n_embd,
                 "n_layer": n_layer, "block_size": block_size, "dropout": dropout}
        axes = {name: parse_axis(name, text) for name, text in lists.items() if text}
        single = {"preset": preset, "recipe": recipe, "n_head": n_head, "max_iters": max_iters,
                  "time_budget": time_budget, "eval_interval": eval_interval,
                  "eval_iters": eval_iters, "seed": seed, "data": data, "encoding": encoding,
                  "device": device, "threads": threads}
        train_args = [arg for name, value in single.items() if value is not None
                      for arg in ("--" + name.replace("_", "-"), str(value))]
        return run_sweep(axes, train_args, out=out, parallel=parallel,
                         on_gpu=pick_device(device).type == "cuda", as_json=as_json,
                         notice=notice)

    code = run_guarded(go)
    if code:
        raise typer.Exit(code)


COMMANDS = {"train", "sample", "tui", "bench", "runs", "explain", "lecture", "sweep"}


def main(argv: list[str] | None = None) -> None:
    """Entry point. Anything that is not a known command runs ``tui`` with those options."""
    from chargpt_tui.torchrun import exit_worker, launched_by_torchrun

    try:
        run_command_line(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as done:
        if launched_by_torchrun():
            exit_worker(done)  # see there: a normal shutdown can abort a finished torchrun run
        if argv is None and STATE["trained"]:
            # A --time-budget covers the whole command, and the interpreter's shutdown with torch
            # loaded took ~9 s on a busy 2-core machine. Nothing is left to tidy after a run:
            # checkpoints are written atomically and the metrics file is closed.
            exit_worker(done)
        raise


def run_command_line(args: list[str]) -> None:
    """Run one command; always ends with SystemExit carrying the exit code."""
    first_word = next((a for a in args if not a.startswith("-")), None)
    asks_root = first_word is None and any(a in ("-h", "--help", "--version") for a in args)
    if first_word not in COMMANDS and not asks_root:
        debug = ["--debug"] if "--debug" in args else []
        args = [*debug, "tui", *(a for a in args if a != "--debug")]
    try:
        # Not standalone: usage errors come back here instead of as typer's multi-line box.
        code = app(args=args, prog_name="chargpt-tui", standalone_mode=False)
    except UsageError as error:
        command = error.ctx.command_path if error.ctx else "chargpt-tui"
        message = " ".join(error.format_message().split())  # click may wrap long messages
        raise SystemExit(usage_error_line(message, command)) from None
    except typer.Abort:
        raise SystemExit(fail("aborted", 1).exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def usage_error_line(message: str, command: str) -> int:
    """Print a mistyped option or value as one line; returns click's usage exit code."""
    fail(_escape(f"{message} — see `{command} --help`"), 2)
    return 2


def runs_table(runs: list[RunInfo]) -> Table:
    """The rich table ``chargpt-tui runs`` prints; it fits 80 columns (``--json`` has every
    field, parameters and checkpoint size included)."""
    import time

    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0))
    table.add_column("run", no_wrap=True)
    table.add_column("recipe", no_wrap=True)
    for column in ("steps", "best val"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("data", overflow="ellipsis", no_wrap=True, max_width=14)
    for column in ("state", "modified"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        steps = "?" if run.step is None else f"{run.step:,}"
        if run.max_iters is not None and run.max_iters < 10**9:  # 10**9: a time-budgeted run
            steps += f"/{_compact(run.max_iters)}"
        table.add_row(
            escape(run.name), run.recipe or "?", steps,
            "-" if run.best_val_loss is None else f"{run.best_val_loss:.4f}",
            escape(Path(run.data).name if run.data and os.sep in run.data else run.data or "?"),
            run.state or "?",
            time.strftime("%m-%d %H:%M", time.localtime(run.modified)),
        )
    return table


def _compact(number: int) -> str:
    """10600000 → 10.6M, 4720 → 4.7k, 100000 → 100k."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= limit:
            return f"{number / limit:.1f}".removesuffix(".0") + suffix
    return str(number)
