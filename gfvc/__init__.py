"""GFVC conformance suite: JVET GFVC AhG common test conditions, runnable.

The core package holds the CLI, the codec API and registry, the job runner
and executors, the results store, video I/O and colour conversion.
"""
__version__ = "0.1.0"
