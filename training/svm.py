"""The fusion stage's linear SVM: scikit-learn's ``StandardScaler`` + ``LinearSVC`` problem,
solved for every class and every candidate ``C`` in a few matrix products.

The problem is LinearSVC's (liblinear, ``penalty="l2"``, ``loss="squared_hinge"``,
one-vs-rest, ``intercept_scaling=1``: the intercept is a constant feature 1 and regularised
with the weights): per class c with targets y = ±1,

    min_w  ½‖w‖² + C Σ_i max(0, 1 − y_i w·x_i)²

on standardised inputs. It is strictly convex, so its solution does not depend on the
solver; what differs from liblinear is only how closely each solver reaches it (liblinear's
default tolerance is loose, this one's tight). Why not liblinear: it solves the classes one
after another in scalar loops, and ``GridSearchCV`` starts every (fold, C) from zero - about
25 s a (run, step) pair at 101 classes. Here:

- the inputs of a fit are rotated into their singular basis (``x = U S Vᵀ``; w = V β keeps
  ‖w‖ = ‖β‖, so the problem is the same in β): at most min(samples, features + 1) unknowns
  per class, and a diagonal ``SᵀS`` that makes the Jacobi preconditioner below work well;
- all classes take a generalised Newton step at once (the squared hinge is piecewise
  quadratic: the Hessian is I + 2C Zᵀ diag(active) Z), solved by preconditioned conjugate
  gradients batched over the classes (two matrix products per iteration), then a backtracking
  line search per class;
- the candidate C are solved in ascending order, each warm-started from the last.

``fit_svm(x, y, svm_c, cv_folds, seed)`` keeps ``GridSearchCV``'s choices: the same folds
(``StratifiedKFold`` when every class fills each fold, else ``KFold``, shuffled with
``seed``), mean fold accuracy, the first listed C among equal scores, a refit on all rows.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

GRADIENT_TOL = 1e-6  # stop when ‖∇f‖ ≤ this × ‖∇f(0)‖ per class (liblinear's primal: 1e-4 × …)
MAX_NEWTON = 100
MAX_CG = 200
MAX_LINE = 50
FORCING = lambda rel: np.minimum(0.1, np.sqrt(rel))  # noqa: E731


class SvmError(ArithmeticError):
    """A fit that did not converge (a fault, as an unconverged LinearSVC is in the fuse stage)."""


@dataclasses.dataclass
class LinearOvR:
    """A fitted standardised one-vs-rest linear SVM; ``decision_function`` and ``predict`` as
    scikit-learn's LinearSVC (one column for two classes, positive = ``classes_[1]``)."""
    classes_: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (features + 1, columns): the last row is the intercept
    C: float

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        d = z @ self.coef[:-1] + self.coef[-1]
        return d[:, 0] if len(self.classes_) == 2 else d

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = self.decision_function(x)
        return self.classes_[(d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)]


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler's mean and scale (a constant feature's scale is 1, by sklearn's test)."""
    n = len(x)
    mean, var = x.mean(axis=0), x.var(axis=0)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


class _Fit:
    """One fit's rows, standardised, with the intercept column, in their singular basis."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        self.mean, self.scale = standardiser(x)
        xa = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])
        u, s, vt = np.linalg.svd(xa, full_matrices=False)
        keep = s > s[0] * max(xa.shape) * np.finfo(np.float64).eps  # the rank: null directions stay 0
        self.z = u[:, keep] * s[keep]  # (n, r): z = x V
        self.z2 = self.z ** 2
        self.vt = vt[keep]  # (r, features + 1)
        self.classes = np.unique(y)
        columns = self.classes[1:] if len(self.classes) == 2 else self.classes
        self.y = np.where(y[:, None] == columns[None, :], 1.0, -1.0)  # (n, columns)
        self.beta = np.zeros((self.z.shape[1], self.y.shape[1]))

    def solve(self, c: float) -> None:
        """Minimise the objective at C = c from the current β (a warm start)."""
        z, y = self.z, self.y
        beta = self.beta
        zb = z @ beta
        g0 = np.linalg.norm(2 * c * (z.T @ y), axis=0)  # ‖∇f(0)‖: the gradient at w = 0
        g0[g0 == 0] = 1.0
        for _ in range(MAX_NEWTON):
            active = (y * zb) < 1
            grad = beta + 2 * c * (z.T @ (active * (zb - y)))
            gnorm = np.linalg.norm(grad, axis=0)
            todo = gnorm > GRADIENT_TOL * g0
            if not todo.any():
                self.beta = beta
                return
            step = self._newton_step(c, active[:, todo], grad[:, todo], gnorm[todo] / g0[todo])
            zstep = z @ step
            t = self._line_search(c, beta[:, todo], zb[:, todo], y[:, todo], grad[:, todo], step, zstep)
            beta = beta.copy()
            beta[:, todo] += t * step
            zb[:, todo] += t * zstep
        raise SvmError(f"SVM fit at C={c}: not converged in {MAX_NEWTON} Newton steps "
                       f"(gradient {gnorm.max():.3g} of {g0[gnorm.argmax()]:.3g})")

    def _newton_step(self, c: float, active: np.ndarray, grad: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """Preconditioned CG on (I + 2C Zᵀ A Z) d = −g, per column, to a forcing tolerance."""
        z = self.z
        hess = lambda v: v + 2 * c * (z.T @ (active * (z @ v)))  # noqa: E731
        precond = 1.0 + 2 * c * (self.z2.T @ active)  # the Hessian's diagonal
        target = FORCING(rel) * np.linalg.norm(grad, axis=0)
        d = np.zeros_like(grad)
        r = -grad
        s = r / precond
        p = s.copy()
        rs = (r * s).sum(axis=0)
        for _ in range(MAX_CG):
            if (np.linalg.norm(r, axis=0) <= target).all():
                break
            hp = hess(p)
            curv = (p * hp).sum(axis=0)
            alpha = np.divide(rs, curv, out=np.zeros_like(rs), where=curv > 0)
            d += alpha * p
            r -= alpha * hp
            s = r / precond
            rs_new = (r * s).sum(axis=0)
            p = s + np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 0) * p
            rs = rs_new
        return d

    @staticmethod
    def _line_search(c, beta, zb, y, grad, step, zstep) -> np.ndarray:
        """Per column, the exact minimiser t of f(β + t d): f' along d is piecewise linear and
        increasing, so Newton's method on it ends when the active set stops changing."""
        bd, dd = (beta * step).sum(axis=0), (step * step).sum(axis=0)
        t = np.ones(beta.shape[1])
        for _ in range(MAX_LINE):
            margin = zb + t * zstep
            active = (y * margin) < 1
            slope = bd + t * dd + 2 * c * (active * (margin - y) * zstep).sum(axis=0)
            curve = dd + 2 * c * (active * zstep * zstep).sum(axis=0)
            t_new = t - slope / curve
            if np.allclose(t_new, t, rtol=1e-12, atol=0):
                return t_new
            t = t_new
        return t

    def model(self, c: float) -> LinearOvR:
        return LinearOvR(self.classes, self.mean, self.scale, self.vt.T @ self.beta, c)


def _candidates(svm_c) -> list[float]:
    return [float(c) for c in (svm_c if isinstance(svm_c, (list, tuple)) else [svm_c])]


def folds(y: np.ndarray, cv_folds: int, seed: int):
    """GridSearchCV's folds as the fuse stage has always asked for them: stratified only when
    every class fills each fold."""
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    n = min(cv_folds, len(y))
    return StratifiedKFold(n, shuffle=True, random_state=seed) if smallest >= n \
        else KFold(n, shuffle=True, random_state=seed)


def cv_scores(x: np.ndarray, y: np.ndarray, candidates: list[float], cv_folds: int, seed: int) -> np.ndarray:
    """Mean fold accuracy of each candidate C (in the candidates' order)."""
    order = np.argsort(candidates, kind="stable")
    scores = np.zeros((cv_folds if cv_folds <= len(y) else len(y), len(candidates)))
    for f, (fit_rows, test_rows) in enumerate(folds(y, cv_folds, seed).split(x, y)):
        fit = _Fit(x[fit_rows], y[fit_rows])
        for i in order:
            fit.solve(candidates[i])
            scores[f, i] = np.mean(fit.model(candidates[i]).predict(x[test_rows]) == y[test_rows])
    return scores.mean(axis=0)


def fit_svm(x: np.ndarray, y: np.ndarray, svm_c, cv_folds: int, seed: int, *,
            cv_out: list | None = None) -> tuple[LinearOvR, float]:
    """A standardised linear SVM fitted on (x, y) and its C: the C of ``svm_c`` with the best
    mean ``cv_folds``-fold accuracy (the first listed among equals) when it lists several
    (``cv_out``, when given, receives those mean accuracies in ``svm_c``'s order)."""
    with threadpool_limits(1, user_api="blas"):  # small products: more threads only contend
        return _fit_svm(x, y, _candidates(svm_c), cv_folds, seed, cv_out)


def _fit_svm(x, y, candidates, cv_folds, seed, cv_out):
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise SvmError(f"an SVM needs at least two classes, got {np.unique(y).tolist()}")
    best = candidates[0]
    if len(candidates) > 1:
        scores = cv_scores(x, y, candidates, cv_folds, seed)
        if cv_out is not None:
            cv_out.extend(float(v) for v in scores)
        best = candidates[int(np.argmax(scores))]
    fit = _Fit(x, y)
    for c in sorted(c for c in candidates if c <= best):  # warm starts up to the chosen C
        fit.solve(c)
    return fit.model(best), best
