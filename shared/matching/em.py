"""Estimating ``MatchParams`` from comparison vectors: unsupervised EM, or counting when labels exist.

Owns: the expectation-maximisation of the Fellegi-Sunter mixture (conditional independence
of comparisons given match status; a comparison missing on a pair contributes nothing),
and the supervised count used to fit the shipped defaults on synthetic data.

Vectors are tuples of level indices in ``model.COMPARISONS`` order (``None`` = missing), as
produced by ``score.comparison_vector``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from shared.matching.model import COMPARISONS, FALLBACK, LEVELS, MatchParams

__all__ = ["Vector", "calibrate", "estimate", "estimate_u", "fit_supervised", "regularise"]

Vector = tuple[int | None, ...]
_PSEUDO = 0.5  # additive smoothing, so a level never seen in a sample keeps a finite weight


def _normalised(counts: Sequence[float], pseudo: float) -> tuple[float, ...]:
    total = sum(counts) + pseudo * len(counts)
    return tuple((c + pseudo) / total for c in counts)


def estimate(
    vectors: Iterable[Vector],
    init: MatchParams | None = None,
    *,
    fixed_u: Mapping[str, tuple[float, ...]] | None = None,
    max_iter: int = 200,
    tol: float = 1e-7,
) -> MatchParams:
    """Unsupervised EM over comparison vectors of candidate pairs.

    ``fixed_u`` pins u-probabilities (for instance estimated from random pairs, as Splink
    does), which keeps EM from drifting towards a "same name" cluster instead of "same person".
    Comparisons never observed keep their ``init`` values.
    """
    params = init or FALLBACK
    patterns = Counter(tuple(v) for v in vectors)
    if not patterns:
        return params
    n_comp = len(COMPARISONS)
    m = [list(params.m[c]) for c in COMPARISONS]
    u = [list(params.u[c]) for c in COMPARISONS]
    if fixed_u:
        for i, c in enumerate(COMPARISONS):
            if c in fixed_u:
                u[i] = list(fixed_u[c])
    prior = params.prior
    items = list(patterns.items())
    total = sum(patterns.values())
    observed = [any(v[i] is not None for v, _ in items) for i in range(n_comp)]
    previous = -math.inf
    for _ in range(max_iter):
        m_counts = [[0.0] * len(LEVELS[c]) for c in COMPARISONS]
        u_counts = [[0.0] * len(LEVELS[c]) for c in COMPARISONS]
        match_mass = 0.0
        loglik = 0.0
        for vec, count in items:
            lm, lu = math.log(prior), math.log(1.0 - prior)
            for i, level in enumerate(vec):
                if level is not None:
                    lm += math.log(m[i][level])
                    lu += math.log(u[i][level])
            top = max(lm, lu)
            lse = top + math.log(math.exp(lm - top) + math.exp(lu - top))
            loglik += count * lse
            p = math.exp(lm - lse)
            match_mass += count * p
            for i, level in enumerate(vec):
                if level is not None:
                    m_counts[i][level] += count * p
                    u_counts[i][level] += count * (1.0 - p)
        prior = min(max(match_mass / total, 1e-6), 1 - 1e-6)
        for i, c in enumerate(COMPARISONS):
            if not observed[i]:
                continue
            m[i] = list(_normalised(m_counts[i], _PSEUDO))
            if not (fixed_u and c in fixed_u):
                u[i] = list(_normalised(u_counts[i], _PSEUDO))
        if abs(loglik - previous) < tol * abs(loglik):
            break
        previous = loglik
    return MatchParams(
        prior=prior,
        m={c: tuple(m[i]) for i, c in enumerate(COMPARISONS)},
        u={c: tuple(u[i]) for i, c in enumerate(COMPARISONS)},
        swap_bits=params.swap_bits,
        tf_cap_bits=params.tf_cap_bits,
    )


def estimate_u(vectors: Iterable[Vector]) -> dict[str, tuple[float, ...]]:
    """u-probabilities from pairs that are almost all non-matches (random pairs)."""
    counts = [[0.0] * len(LEVELS[c]) for c in COMPARISONS]
    for vec in vectors:
        for i, level in enumerate(vec):
            if level is not None:
                counts[i][level] += 1
    return {c: _normalised(counts[i], _PSEUDO) for i, c in enumerate(COMPARISONS) if sum(counts[i])}


def fit_supervised(
    labelled: Iterable[tuple[Vector, bool]], base: MatchParams | None = None, allow_only_matches: bool = False
) -> MatchParams:
    """m, u and prior by counting labelled pairs (used on synthetic data for the shipped default).

    With ``allow_only_matches`` only m is learnt and u comes from ``base``.
    """
    base = base or FALLBACK
    m_counts = [[0.0] * len(LEVELS[c]) for c in COMPARISONS]
    u_counts = [[0.0] * len(LEVELS[c]) for c in COMPARISONS]
    n_match = n_all = 0
    for vec, is_match in labelled:
        n_all += 1
        n_match += is_match
        target = m_counts if is_match else u_counts
        for i, level in enumerate(vec):
            if level is not None:
                target[i][level] += 1
    if not n_match or (n_all == n_match and not allow_only_matches):
        raise ValueError("need both matching and non-matching pairs")
    m: dict[str, tuple[float, ...]] = {}
    u: dict[str, tuple[float, ...]] = {}
    for i, c in enumerate(COMPARISONS):
        m[c] = _normalised(m_counts[i], _PSEUDO) if sum(m_counts[i]) else base.m[c]
        u[c] = _normalised(u_counts[i], _PSEUDO) if sum(u_counts[i]) else base.u[c]
    prior = n_match / n_all if n_all > n_match else base.prior
    return MatchParams(prior=prior, m=m, u=u, swap_bits=base.swap_bits, tf_cap_bits=base.tf_cap_bits)


def calibrate(
    rows: Sequence[Sequence[float]],
    labels: Sequence[bool],
    ridge: float = 1e-4,
    iters: int = 60,
    intercept_only: bool = False,
) -> tuple[list[float], float]:
    """Logistic regression of the match label on per-comparison log2 Bayes factors.

    P(match) = 1 / (1 + 2^-(intercept + sum(coef[j] * rows[j]))); returns (coefs, intercept
    in bits).  Identical rows are pooled, and Newton steps are halved until the likelihood
    improves, so nearly separable data cannot make it diverge.
    """
    if not any(labels) or all(labels):
        raise ValueError("need both matching and non-matching pairs")
    ln2 = math.log(2.0)
    pooled: Counter[tuple[tuple[float, ...], bool]] = Counter()
    for row, label in zip(rows, labels, strict=True):
        pooled[(tuple(round(x * ln2, 6) for x in row), bool(label))] += 1
    data: list[tuple[tuple[float, ...], float, float]] = [
        (x, 1.0 if y else 0.0, float(n)) for (x, y), n in pooled.items()
    ]
    k = len(rows[0]) + 1  # coefficients then intercept

    def z_of(beta: Sequence[float], x: Sequence[float]) -> float:
        return beta[-1] + sum(b * xi for b, xi in zip(beta, x, strict=False))

    def loglik(beta: Sequence[float]) -> float:
        total = -ridge * sum((b - 1.0) ** 2 for b in beta[:-1])
        for x, y, n in data:
            z = z_of(beta, x)
            softplus = z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))
            total += n * (y * z - softplus)
        return total

    # Start from textbook Fellegi-Sunter (all coefficients 1) with the intercept that fits
    # best, found by bisection: from a poor start the Hessian vanishes and Newton stalls.
    lo, hi = -200.0, 200.0
    for _ in range(60):
        mid = (lo + hi) / 2
        expected = 0.0
        for x, _, n in data:
            z = mid + sum(x)
            expected += n / (1.0 + math.exp(-z)) if z > -700 else 0.0
        if expected > sum(n * y for _, y, n in data):
            hi = mid
        else:
            lo = mid
    beta = [1.0] * (k - 1) + [(lo + hi) / 2]
    if intercept_only:
        return beta[:-1], beta[-1] / ln2
    current = loglik(beta)
    for _ in range(iters):
        grad = [0.0] * k
        hess = [[0.0] * k for _ in range(k)]
        for x, y, n in data:
            z = z_of(beta, x)
            p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
            feats = [*x, 1.0]
            r = n * (y - p)
            w = n * p * (1.0 - p) + 1e-12
            for i in range(k):
                grad[i] += r * feats[i]
                wi = w * feats[i]
                row_h = hess[i]
                for j in range(i, k):
                    row_h[j] += wi * feats[j]
        for i in range(k - 1):
            grad[i] -= 2 * ridge * (beta[i] - 1.0)
            hess[i][i] += 2 * ridge
        for i in range(k):
            for j in range(i):
                hess[i][j] = hess[j][i]
        step_dir = _solve(hess, grad)
        step = 1.0
        while step > 1e-6:
            trial = [b + step * d for b, d in zip(beta, step_dir, strict=True)]
            candidate = loglik(trial)
            if candidate >= current:
                break
            step /= 2
        else:
            break
        beta, current = trial, candidate
        if max(abs(step * d) for d in step_dir) < 1e-7:
            break
    return beta[:-1], beta[-1] / ln2


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the systems here are 8 x 8)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        if abs(m[col][col]) < 1e-15:
            continue
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            if f:
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        if abs(m[r][r]) < 1e-15:
            continue
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def regularise(params: MatchParams, m_floor: float = 0.005) -> MatchParams:
    """Make fitted parameters safe to ship.

    - every m is at least ``m_floor``: a sample may never show a clerk entering the wrong sex,
      but the field will, and one such slip must not outweigh everything else;
    - weights never increase down the levels (an exact date is never weaker evidence than a
      day/month swap, an exact name never weaker than a phonetic one), which a small sample
      of a rare level can otherwise invert (each level at least a quarter bit below the one
      before).
    """
    m_out: dict[str, tuple[float, ...]] = {}
    u_out: dict[str, tuple[float, ...]] = {}
    for c in COMPARISONS:
        m = [max(x, m_floor) for x in params.m[c]]
        total = sum(m)
        m = [x / total for x in m]
        u = list(params.u[c])
        best = math.inf
        for k in range(len(m)):
            w = math.log2(m[k] / u[k])
            if w > best - 0.25:
                w = best - 0.25
                u[k] = m[k] / 2.0**w
            best = w
        m_out[c], u_out[c] = tuple(m), tuple(u)
    return MatchParams(
        prior=params.prior,
        m=m_out,
        u=u_out,
        swap_bits=params.swap_bits,
        tf_cap_bits=params.tf_cap_bits,
        coefficients=params.coefficients,
        duplicate_share=params.duplicate_share,
        reference_registry=params.reference_registry,
    )
