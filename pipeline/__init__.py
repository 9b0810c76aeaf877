"""The top layer: the sweep, its stage list, the Ray Tune glue of the train and prune stages,
the cost plan, the preflight and the config's cross-key checks. It may import every package
below it; nothing below imports it (``tests/test_layers.py``)."""
