"""``python -m chargpt_tui`` runs the same CLI as the ``chargpt-tui`` script (torchrun uses it)."""

from chargpt_tui.cli import main

if __name__ == "__main__":
    main()
