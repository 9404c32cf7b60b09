"""One module per widget; each widget's CSS lives in a ``.tcss`` file beside it."""
