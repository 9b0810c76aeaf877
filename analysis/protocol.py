"""One or two sentences naming an experiment's evaluation and fusion protocol, for the report."""
from __future__ import annotations


def protocol_text(config: dict) -> str:
    """The protocol of ``config`` (``experiment.json``'s ``config``: a dict of sections); keys
    that are missing (older experiments) fall back to the config defaults."""
    data, evaluation = config.get("data", {}), config.get("eval", {})
    fusion, model = config.get("fusion", {}), config.get("model", {})
    clips, ten_crop = data.get("test_clips", 25), evaluation.get("ten_crop", False)
    crops = "10 crops (4 corners + centre, each also flipped)" if ten_crop else "1 centre crop"
    text = (f"Evaluation protocol: {clips} clips per test video × {crops}; a video's score is the "
            f"mean softmax over its clips and crops. Temporal input: flow / {model.get('flow_scale', 1.0):g}.")
    methods = [m for m in fusion.get("methods", []) if m.startswith("svm")]
    if methods:
        fit = ("the held-out validation videos of the train list (never trained on)"
               if fusion.get("fit_on", "heldout") == "heldout" else "every train-list video")
        c = fusion.get("svm_c", [0.01, 0.1, 1.0, 10.0])
        chosen = (f"C chosen from {c} by {fusion.get('cv_folds', 3)}-fold cross-validation"
                  if isinstance(c, list) and len(c) > 1 else f"C = {c[0] if isinstance(c, list) else c}")
        text += f"\nFusion SVMs ({', '.join(methods)}): standardised inputs, fitted on {fit}, {chosen}."
    return text
