"""chargpt-tui: train a character-level GPT in your terminal and talk to it while it learns.

Kept import-light on purpose: ``chargpt-tui --help`` must not pay for torch or textual.
"""

__version__ = "0.1.0"
