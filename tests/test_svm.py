"""training.svm solves scikit-learn's StandardScaler + LinearSVC problem: the same weights (to the
solvers' tolerances), the same cross-validated C as GridSearchCV, and a fit that does not
converge is an error."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from benchmarks.fusion import compare, today_fit
from training import svm as svm_module
from training.svm import SvmError, fit_svm


def blobs(n_per_class: int, classes: int, features: int, seed: int, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(0, 1, (classes, features)) * rng.uniform(0.1, 5, features)  # unequal scales
    return centres[y] + spread * rng.normal(0, 1, (len(y), features)) + 10, y


@pytest.mark.parametrize("classes,features", [(2, 6), (5, 8), (4, 60)])  # binary; n > d; d > n
def test_same_solution_as_liblinear(classes, features):
    x, y = blobs(10, classes, features, seed=classes)
    ours, c = fit_svm(x, y, 0.5, 3, 0)
    ref = make_pipeline(StandardScaler(), LinearSVC(C=0.5, tol=1e-10, max_iter=1_000_000,
                                                    dual=len(x) <= features)).fit(x, y)
    lin = ref[-1]
    coef = np.vstack([lin.coef_.T, lin.intercept_[None, :]])
    assert c == 0.5 and ours.coef.shape == coef.shape
    np.testing.assert_allclose(ours.coef, coef, atol=1e-4 * np.abs(coef).max())
    x_new, _ = blobs(5, classes, features, seed=99)
    np.testing.assert_allclose(ours.decision_function(x_new), ref.decision_function(x_new), rtol=1e-3, atol=1e-3)
    assert np.array_equal(ours.predict(x_new), ref.predict(x_new))


def test_chosen_c_equals_grid_search():
    """Overlapping classes, where C matters: the same CV accuracies per C and the same choice."""
    x, y = blobs(12, 6, 30, seed=3, spread=4.0)
    ours, theirs = [], []
    _, c = fit_svm(x, y, [0.001, 0.01, 0.1, 1.0, 10.0], 3, 7, cv_out=ours)
    _, c_ref = today_fit(x, y, [0.001, 0.01, 0.1, 1.0, 10.0], 3, 7, cv_out=theirs)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert len(set(ours)) > 1 and c == c_ref  # the candidates score differently: the choice is a choice


def test_benchmark_paper_shape_sizes_same_choices():
    """benchmarks.fusion at the paper-shape sizes (101 classes, 101 fit videos, 2 x 512 features):
    the same C and test accuracy as today's fit (the logits fusion: the others take today's fit
    longer; `python -m benchmarks.fusion` runs all three)."""
    result = compare("paper_shape", methods=("svm_logits",), noise=1.0)
    for row in result["methods"]:
        assert row["new_c"] == row["today_c"], row
        assert abs(row["new_accuracy"] - row["today_accuracy"]) <= 1.0, row


def test_unconverged_fit_is_an_error(monkeypatch):
    monkeypatch.setattr(svm_module, "MAX_NEWTON", 1)
    x, y = blobs(10, 4, 8, seed=1, spread=3.0)
    with pytest.raises(SvmError, match="not converged in 1 Newton steps"):
        fit_svm(x, y, 10.0, 3, 0)
    with pytest.raises(SvmError, match="at least two classes"):
        fit_svm(x[:3], np.zeros(3, dtype=int), 1.0, 3, 0)
