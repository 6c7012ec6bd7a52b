"""Benchmarks of neuralsde: thin command-line programs over the library."""
