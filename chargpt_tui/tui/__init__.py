"""The Textual app: a thin view over the engine's event stream (the engine never imports this)."""
