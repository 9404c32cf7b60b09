"""F1: every key and what each panel shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]chargpt-tui[/b] trains a character-level GPT; prompt it while it learns.

[b]Keys[/b] (all of them work while you type)
  [b]Enter[/b]         generate a continuation of the prompt
  [b]↑ ↓[/b]           recall earlier prompts
  [b]Escape[/b]        stop the answer being generated
  [b]Ctrl+T, F5[/b]    pause or resume training
  [b]Ctrl+S[/b]        save a checkpoint now
  [b]Ctrl+Q[/b]        save a checkpoint and quit
  [b]F2[/b]            sampling parameters: mode (a list), temperature, top-k,
                top-p, beam width, length, seed, n-gram guard
                (Tab moves between fields, Enter applies)
  [b]F3[/b]            switch between sampling and beam search
  [b]F4[/b]            attention: the last prompt shaded by where the
                selected character looks (← → character, ↑ ↓ head,
                PgUp PgDn layer)
  [b]F7[/b]            every layer × head as a thumbnail (Enter opens one)
  [b]F8[/b]            surprise: each character coloured by the model's
                loss on it, with its top guesses
  [b]F9[/b]            the characters' embeddings in 2-D (PCA)
                In these views: r live weights, [ ] saved steps,
                t another text, Escape closes
  [b]F10[/b]           compare: lay another run's curves over the chart
                (type its folder; empty removes them)
  [b]Tab[/b]           move between the prompt, the transcript, the chart, the
                live samples and the log; a focused panel scrolls with
                ↑ ↓, PageUp/PageDown, Home/End
  [b]F6[/b]            maximise the focused panel (F6 or Escape restores)
  [b]Ctrl+P[/b]        command palette with the same actions
  [b]F1[/b]            this help (Escape closes it)
  Ctrl+T, F5 and Ctrl+S are left out of the footer when nothing trains
  here: a checkpoint opened with --checkpoint is for chat only, and a run
  watched with --follow is trained (and paused) by its own process.

[b]Training[/b] (left, or top on small terminals)
  The stats line: state, step done / steps planned, speed in tokens
  (characters) per second, learning rate, training time, time left,
  device and model size.
  The chart, loss against step: training loss as a solid cyan line
  (averaged per column), validation loss as a magenta line with a ◆ at
  each evaluation. Lower is better; a gap opening between them means the
  model starts memorising its training text. A run laid over for
  comparison is drawn with half the dots (green) and ◇ (yellow).
  Below: a sample from the weights at every evaluation, all kept under
  their step (scroll back to watch the text turn into words), and the log
  of evaluations, saved checkpoints, warnings and errors.

[b]Prompt[/b] (right, or bottom)
  Each answer comes from a snapshot of the weights taken when you press
  Enter; the line under it names the step. Training waits while an answer
  is generated, then carries on by itself. Whitespace the model wrote is
  shown as ␣ and ⏎ when there is little else.
  Beam search shows the part all beams agree on as it grows (the dimmed
  rest may still change), then every beam with its score: the summed
  log-probability, closer to 0 is likelier. Its n-gram guard (default 4)
  forbids repeating any 4 characters, which keeps it out of loops.
  [b]next[/b]: the characters the model finds likeliest after what you typed.
"""


class HelpScreen(ModalScreen[None]):
    AUTO_FOCUS = "#help-body"  # so ↑/↓/PgUp/PgDn scroll it on a small terminal
    BINDINGS = [Binding("escape,f1,q", "close", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss(None)
