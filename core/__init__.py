"""The bottom layer: what every stage shares and nothing above it defines.

The config schema and its validation messages, config files with ``extends`` and ``--set``
overrides, provenance, the results store (Parquet partitions, one partition-path builder), the
one atomic writer, the experiment lock, progress bars, thread pinning, node info, signals and
disk-space checks, the command-line help. It imports nothing of the project's other packages
(``tests/test_layers.py``).
"""
