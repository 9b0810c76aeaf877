"""Explanations of the stream models: vanilla-gradient saliency and the other methods, IROF and
the other faithfulness metrics, saliency change across pruning, and the explain stage that runs
them over a sweep's grid. ``analysis`` reads their tables; this package never imports it."""
