"""Benchmarks and measurements behind the numbers quoted in ``docs/`` (run as modules, e.g.
``python -m bbavectors.benchmarks.targets``); each compares ours with a baseline in the same run."""
