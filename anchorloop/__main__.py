"""``python -m anchorloop``: the same command line as the ``anchorloop`` script."""

from anchorloop.cli import app

app(prog_name="anchorloop")
