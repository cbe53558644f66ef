"""Benchmarks and measurements behind the numbers quoted in ``docs/``; each compares ours with a baseline
in the same run. The modules return results (dicts) and format them (``format_table``);
``tools/benchmark.py`` parses the options and prints."""
