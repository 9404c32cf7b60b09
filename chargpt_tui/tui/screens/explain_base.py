"""What the "see what the model learned" screens share: where their weights and text come from.

Each view computes its picture in a thread worker, never on the UI thread. Its weights are the
live ones (a snapshot of the trainer's last finished step, taken while training is parked the
way prompts park it) or a step of the run's saved weights history (``[`` / ``]``); ``r`` goes
back to the live weights and recomputes. The title always says which step the picture shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from chargpt_tui import history
from chargpt_tui.errors import UserError
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui.live_model import ModelSource

Result = TypeVar("Result")


@dataclass(frozen=True)
class ViewContext:
    """What the app hands a view: the weights, the run folder (for its history) and texts to
    look at, by name ("typed text", "last prompt", "live sample", "validation"), the most
    useful first. The app collects the texts from :class:`~chargpt_tui.tui.messages.ViewText`
    messages and the prompt line."""

    source: ModelSource
    run_dir: Path | None
    texts: dict[str, str]
    live_samples: bool = True  # False: a checkpoint opened for chat only never samples

    def how_to_get_a_text(self) -> str:
        """What the user can do for a (another) text to look at."""
        return ("type a prompt (Enter answers it)" if not self.live_samples
                else "type a prompt (Enter answers it) or wait for a live sample")


class ViewComputed(Message, Generic[Result]):
    """A worker finished a view's picture (or says why it could not)."""

    def __init__(self, result: Result | None, step: int | None, saved: bool,
                 error: str | None = None) -> None:
        super().__init__()
        self.result, self.step, self.saved, self.error = result, step, saved, error


class ExplainScreen(Screen[None], Generic[Result]):
    """Base of the views: subclasses compute (in a thread) and show (on the UI thread)."""

    # One footer entry per pair of keys (the other key of the pair is bound but not listed),
    # so every view's keys fit an 80-column footer.
    BINDINGS = [
        Binding("t", "next_text", "text", tooltip="Look at another text"),
        Binding("r", "recompute", "live", tooltip="Recompute on the live weights"),
        Binding("left_square_bracket", "saved_step(-1)", "saved", key_display="[ ]",
                tooltip="The weights of an earlier (]: later) saved step"),
        Binding("right_square_bracket", "saved_step(1)", "later saved step", show=False),
        Binding("escape", "close", "close"),
    ]
    TITLE = "view"
    NEEDS_TEXT = True  # whether the view looks at a text (the embeddings do not)

    def __init__(self, context: ViewContext, text_name: str | None = None) -> None:
        super().__init__()
        self.context = context
        names = list(context.texts)
        self.text_name = text_name if text_name in context.texts else (names[0] if names
                                                                       else None)
        self.saved_step: int | None = None  # None: the live weights
        self.cursor: int | None = None  # the selected character; None: the last one
        self.step: int | None = None
        self.result: Result | None = None
        self.status = "computing…"

    @property
    def text(self) -> str:
        return self.context.texts.get(self.text_name or "", "")

    def on_mount(self) -> None:
        if self.NEEDS_TEXT and not self.text:
            self.status = (f"no text yet: {self.context.how_to_get_a_text()}, then open this "
                           "view again")
            self.update_title()
            return
        self.compute()

    # -- computing --------------------------------------------------------------------------

    def compute(self) -> None:
        self.status = "computing…"
        self.update_title()
        self._work(self.saved_step, self.text)

    @work(thread=True, exclusive=True, group="explain", exit_on_error=False,
          description="computing a view of the model")
    def _work(self, saved_step: int | None, text: str) -> None:
        source = self.context.source
        try:
            if saved_step is None:
                snapshot = source.snapshot()
                if snapshot is None:
                    self.post_message(ViewComputed(None, None, False, "no model yet — wait "
                                                   "until training has started"))
                    return
                with source.hold_training():  # take turns with training, as prompts do
                    result = self.compute_view(snapshot.model, snapshot.tokenizer, text)
                self.post_message(ViewComputed(result, snapshot.step, False))
            else:
                assert self.context.run_dir is not None
                model, tokenizer = history.load_step(self.context.run_dir, saved_step)
                with source.hold_training():
                    result = self.compute_view(model, tokenizer, text)
                self.post_message(ViewComputed(result, saved_step, True))
        except UserError as error:
            self.post_message(ViewComputed(None, saved_step, saved_step is not None, str(error)))
        except Exception as error:  # noqa: BLE001 - a view that fails must say so, not hang
            self.post_message(ViewComputed(None, saved_step, saved_step is not None,
                                           f"could not compute this view: {error}"))

    def compute_view(self, model: GPTLanguageModel, tokenizer: CharTokenizer,
                     text: str) -> Result:
        """The picture's data (runs in a worker thread: model math only, no widgets)."""
        raise NotImplementedError

    def on_view_computed(self, message: ViewComputed[Result]) -> None:
        message.stop()
        if message.error is not None:
            self.status = message.error
        else:
            self.result, self.step = message.result, message.step
            self.status = f"step {message.step} " + ("(saved)" if message.saved else "(live)")
            self.show(message.result)  # type: ignore[arg-type]
        self.update_title()

    def show(self, result: Result) -> None:
        """Draw a new result (UI thread)."""
        raise NotImplementedError

    # -- the title line ---------------------------------------------------------------------

    def describe(self) -> str:
        """What the title says after the view's name and the step (subclasses add to it)."""
        return ""

    def update_title(self) -> None:
        parts = [f"[b]{self.TITLE}[/b]", self.status]
        if detail := self.describe():
            parts.append(detail)
        self.query_one(".view-title", Static).update(" · ".join(parts))

    # -- keys -------------------------------------------------------------------------------

    def action_recompute(self) -> None:
        self.saved_step = None
        self.compute()

    def action_saved_step(self, delta: int) -> None:
        steps = history.saved_steps(self.context.run_dir) if self.context.run_dir else []
        if not steps:
            self.notify("this run has no saved weights history (history/ in its folder)",
                        severity="warning")
            return
        if self.saved_step is None:  # from the live weights, [ goes to the newest saved
            index = len(steps) if delta < 0 else len(steps) - 1
        else:
            index = steps.index(self.saved_step) if self.saved_step in steps else len(steps)
        index = max(0, min(len(steps) - 1, index + delta))
        self.saved_step = steps[index]
        self.compute()

    def action_next_text(self) -> None:
        """The next text, or a word on why there is none (the key never does nothing)."""
        names = list(self.context.texts)
        if not self.NEEDS_TEXT:
            self.notify("this view does not depend on a text", title=self.TITLE)
            return
        if len(names) < 2:
            have = f"only the {names[0]} to look at" if names else "no text to look at"
            self.notify(f"{have}: {self.context.how_to_get_a_text()}, then open this view "
                        "again", title=self.TITLE, severity="warning")
            return
        index = names.index(self.text_name) if self.text_name in names else -1
        self.text_name = names[(index + 1) % len(names)]
        self.cursor = None
        self.compute()

    def action_close(self) -> None:
        self.dismiss(None)

    def carry_on_from(self, other: ExplainScreen[Any]) -> None:
        """Look at what the view this one replaces looked at: its text and its weights."""
        if other.text_name in self.context.texts:
            self.text_name = other.text_name
        self.saved_step = other.saved_step


def open_view(app: App[Any], view: ExplainScreen[Any]) -> None:
    """Show ``view`` in place of the view on screen, if there is one.

    Views replace each other rather than stack: Escape always goes back to the main screen,
    and only the view on screen computes (a replaced view is removed with its worker). The new
    view goes on with the replaced one's text and weights (a saved step stays selected)."""
    current = app.screen
    if isinstance(current, ExplainScreen):
        view.carry_on_from(current)
        app.switch_screen(view)
    else:
        app.push_screen(view)
