"""The application floor: the ``gfvc`` command line and everything that runs a CTC.

Sub-packages: :mod:`suite.cli` (the command line: one module per area of commands) and
:mod:`suite.runner` (job matrix, the job function, executors, run control, run status). This floor
imports every floor below it (codec library, conditions, anchors, metrics, models, reports, tools)
and nothing imports it (docs/architecture.md; the contracts in pyproject.toml keep it so).
"""
