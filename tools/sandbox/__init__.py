"""The machinery behind ``tools.python_exec``: a warm fork server that runs each program in its own
isolated process tree.

Everything in this package except ``client`` runs inside the fork server process, which loads
the package under the name ``sandbox`` with nothing but the standard library, so no module here
may import anything outside the standard library or this package.
"""
