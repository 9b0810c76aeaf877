"""How fast are the fuse stage's SVM fits? Today's fit (scikit-learn ``GridSearchCV`` over
``LinearSVC``, what ``training.fusion`` used before issue 26) against ``training.svm.fit_svm``,
in the same run on the same synthetic scores, per SVM fusion method and per (run, step) pair.

The scores are shaped like two streams' per-video outputs: each stream sees a class through a
noisy prototype (its penultimate features: non-negative, ``--features`` wide), a linear head
trained elsewhere maps them to logits, softmax gives the scores. Sizes:

- ``paper_shape``: ray_configs/paper_shape.yaml's fuse stage: 101 classes, SVMs fit on the
  202 held-out videos (one validation group of two videos per class), ResNet-18 features
  (2 x 512), 404 test videos;
- ``ucf101``: the paper config's: 101 classes, ≈ 1,070 held-out videos (2 of split 3's 18 train
  groups), ResNet-101 features (2 x 2,048), 3,783 test videos.

For each method it prints both fits' seconds, the ratio, the chosen C, the test accuracies and
the share of test videos both fits predict alike. Same C and accuracies within ``--tolerance``
points are the goal (both fits solve the same strictly convex problem; they differ by how close
each solver gets, liblinear's default tolerance being the looser).

    python -m benchmarks.fusion                     # paper_shape sizes
    python -m benchmarks.fusion --size ucf101       # the paper config's sizes (minutes: today's fit)
    python -m benchmarks.fusion --json /tmp/fusion.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from core.cli import HelpFormatter

SIZES = {
    "paper_shape": dict(classes=101, fit_videos=202, test_videos=404, features=512, noise=2.0),
    "ucf101": dict(classes=101, fit_videos=1070, test_videos=3783, features=2048, noise=4.0),
}
METHODS = ("svm_softmax", "svm_features", "svm_logits")


def today_fit(x, y, svm_c, cv_folds: int, seed: int, cv_out: list | None = None):
    """The fuse stage's SVM fit before issue 26 (kept here as the reference), unchanged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from training.svm import folds
    candidates = [float(c) for c in (svm_c if isinstance(svm_c, (list, tuple)) else [svm_c])]
    svm = make_pipeline(StandardScaler(), LinearSVC(C=candidates[0], dual=x.shape[0] <= x.shape[1],
                                                    max_iter=100_000, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The number of unique classes")  # 1 video a class
        if len(candidates) == 1:
            return svm.fit(x, y), candidates[0]
        search = GridSearchCV(svm, {"linearsvc__C": candidates}, cv=folds(y, cv_folds, seed),
                              error_score="raise")
        search.fit(x, y)
    if cv_out is not None:
        cv_out.extend(float(v) for v in search.cv_results_["mean_test_score"])
    return search.best_estimator_, float(search.best_params_["linearsvc__C"])


def synthetic_scores(classes: int, videos: int, features: int, seed: int, *, noise: float = 1.0,
                     heads=None, prototypes=None):
    """Two streams' per-video (scores, features, logits) for ``videos`` videos, labels spread
    evenly over the classes; ``heads``/``prototypes`` shared between the fit and test sets."""
    rng = np.random.default_rng(seed)
    labels = np.arange(videos) % classes
    out = []
    for s in range(2):
        proto = prototypes[s]
        feats = np.maximum(0.0, proto[labels] + noise * (1.5 + s) * rng.standard_normal((videos, features)))
        logits = feats @ heads[s] + 0.5 * rng.standard_normal((videos, classes))
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(dict(scores=z / z.sum(axis=1, keepdims=True), features=feats, logits=logits))
    return labels, out


def score_sets(size: str, seed: int = 0, noise: float | None = None):
    spec = SIZES[size]
    noise = spec["noise"] if noise is None else noise
    rng = np.random.default_rng(seed)
    k, d = spec["classes"], spec["features"]
    prototypes = [np.maximum(0.0, rng.standard_normal((k, d))) for _ in range(2)]
    heads = [(p - p.mean(axis=0)).T / np.sqrt(d) * 3 for p in prototypes]  # a head that knows the prototypes
    fit = synthetic_scores(k, spec["fit_videos"], d, seed + 1, noise=noise, heads=heads, prototypes=prototypes)
    test = synthetic_scores(k, spec["test_videos"], d, seed + 2, noise=noise, heads=heads, prototypes=prototypes)
    return fit, test


def compare(size: str, *, svm_c=(0.01, 0.1, 1.0, 10.0), cv_folds: int = 3, seed: int = 0,
            methods=METHODS, reference: bool = True, noise: float | None = None) -> dict:
    from training.fusion import SVM_INPUTS
    from training.svm import fit_svm
    (y_fit, fit), (y_test, test) = score_sets(size, seed, noise)
    rows = []
    for method in methods:
        key = SVM_INPUTS[method]
        x_fit = np.hstack([fit[0][key], fit[1][key]])
        x_test = np.hstack([test[0][key], test[1][key]])
        row = dict(method=method, inputs=x_fit.shape[1], fit_videos=len(y_fit))
        t = time.perf_counter()
        row["new_cv"], row["today_cv"] = [], []
        new, row["new_c"] = fit_svm(x_fit, y_fit, list(svm_c), cv_folds, seed, cv_out=row["new_cv"])
        row["new_s"] = time.perf_counter() - t
        new_pred = new.predict(x_test)
        row["new_accuracy"] = 100 * float(np.mean(new_pred == y_test))
        if reference:
            t = time.perf_counter()
            old, row["today_c"] = today_fit(x_fit, y_fit, list(svm_c), cv_folds, seed, row["today_cv"])
            row["today_s"] = time.perf_counter() - t
            old_pred = old.predict(x_test)
            row["today_accuracy"] = 100 * float(np.mean(old_pred == y_test))
            row["same_predictions"] = 100 * float(np.mean(old_pred == new_pred))
            row["speedup"] = row["today_s"] / row["new_s"]
        rows.append(row)
    total = {k: sum(r[k] for r in rows) for k in ("new_s", "today_s") if all(k in r for r in rows)}
    return dict(size=size, sizes=SIZES[size], svm_c=list(svm_c), cv_folds=cv_folds, methods=rows,
                pair_new_s=total.get("new_s"), pair_today_s=total.get("today_s"),
                pair_speedup=total["today_s"] / total["new_s"] if "today_s" in total else None)


def report(result: dict, tolerance: float) -> tuple[str, bool]:
    lines = [f"fusion SVM fits, {result['size']} sizes {result['sizes']}, C from {result['svm_c']}, "
             f"{result['cv_folds']}-fold CV; load average {os.getloadavg()[0]:.2f} "
             f"({os.cpu_count()} CPUs), 1 BLAS thread"]
    ok = True
    for r in result["methods"]:
        line = f"  {r['method']:<13} {r['inputs']:>5} inputs: new {r['new_s']:7.2f} s C={r['new_c']:g} " \
               f"acc {r['new_accuracy']:.2f} %"
        if "today_s" in r:
            line += (f" | today {r['today_s']:7.2f} s C={r['today_c']:g} acc {r['today_accuracy']:.2f} % | "
                     f"{r['speedup']:.1f}x, same predictions {r['same_predictions']:.1f} %")
            ok &= r["new_c"] == r["today_c"] and abs(r["new_accuracy"] - r["today_accuracy"]) <= tolerance
        lines.append(line)
        cv = lambda v: " ".join(f"{100 * a:.1f}" for a in v)  # noqa: E731
        lines.append(f"  {'':<13} CV accuracy per C: new {cv(r['new_cv'])}" +
                     (f" | today {cv(r['today_cv'])}" if r["today_cv"] else ""))
    if result["pair_today_s"] is not None:
        lines.append(f"  per (run, step) pair (3 SVM fusions): today {result['pair_today_s']:.2f} s, "
                     f"new {result['pair_new_s']:.2f} s: {result['pair_speedup']:.1f}x faster; "
                     f"same C and accuracies within {tolerance} points: {'yes' if ok else 'NO'}")
    else:
        lines.append(f"  per (run, step) pair (3 SVM fusions): new {result['pair_new_s']:.2f} s")
    return "\n".join(lines), ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fusion", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog="exit codes: 0 done (and the same choices), 1 a different C or accuracy, 2 bad command line")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper_shape", help="score set sizes (see above)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic scores and CV folds")
    parser.add_argument("--cv-folds", type=int, default=3, help="folds of the C search (fusion.cv_folds)")
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="accuracy difference (points) that still counts as the same")
    parser.add_argument("--no-reference", action="store_true", help="time the new fit only")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (the fuse task has one CPU)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads):
        result = compare(args.size, cv_folds=args.cv_folds, seed=args.seed, reference=not args.no_reference)
    text, ok = report(result, args.tolerance)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
