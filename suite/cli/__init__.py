"""The ``gfvc`` command line: :mod:`suite.cli.main` builds the parser from the areas' ``register`` functions."""
