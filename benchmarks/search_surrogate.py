"""The surrogate of benchmarks/search.py: val_bpb as a cheap noisy function of a source's boxed constants.

    val_bpb(source, seed) = base + sum_i (linear_i * u_i + quadratic_i * u_i^2) + noise(source, seed)

u_i is constant i's place in the search box (benchmarks.search_box: 0 at its lower bound, 1 at its upper, on a log
scale for rates and sizes), and every quadratic_i >= 0, so each constant has one best place (inside the box or at
an edge) and a cost of being elsewhere. The noise has the
measured seed spread (noise_std) and is deterministic, like training on CPU: the same source on the same seed gives
the same value. Part of it (seed_correlation) is shared by every source on a seed, as a training seed moves every
variant's result a little the same way; the rest is the source's own.

Fit (`benchmarks/search.py --fit N`): the parameters start from a prior written in the params file (where each
constant's best place is believed to be and how much it matters), and a least-squares fit to real evaluations moves
them: the model is linear in the features (u_i, u_i^2), so the fit is ridge regression towards the prior's
coefficients, solved in closed form; a quadratic coefficient the fit makes negative is fixed at 0 and the rest
refitted (an active set), so the saved model is exactly the fitted one. The real evaluations it was fitted to are
kept in benchmarks/results/search_fit.jsonl, and the params file says how many there were and how well it fits.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from benchmarks.search_box import BOX, unit_point
from genome import content_hash


def _gauss(*key) -> float:
    """A standard normal draw that depends only on key."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    u2 = (int.from_bytes(digest[8:16], "big") + 0.5) / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@dataclass
class Surrogate:
    base: float
    terms: dict[str, dict[str, float]]          # name -> {"linear", "quadratic", "optimum" (where it is lowest)}
    noise_std: float
    seed_correlation: float = 0.5
    budget_tokens: int | None = None
    prior: dict = field(default_factory=dict)   # the prior's base and terms, kept for the next fit
    fit: dict = field(default_factory=dict)     # how the parameters were fitted

    def mean(self, source: str) -> float:
        """The noise-free val_bpb of source."""
        u = unit_point(source)
        return self.base + sum(t["linear"] * u[n] + t["quadratic"] * u[n] ** 2 for n, t in self.terms.items() if n in u)

    def __call__(self, source: str, seed: int) -> float:
        shared = _gauss("seed", seed)
        own = _gauss("source", content_hash(source), seed)
        rho = self.seed_correlation
        return self.mean(source) + self.noise_std * (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own)

    def best(self) -> float:
        """The lowest noise-free value inside the box (each optimum clipped to the box)."""
        return self.base + sum(t["linear"] * t["optimum"] + t["quadratic"] * t["optimum"] ** 2
                               for t in self.terms.values())

    # -- storage -----------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> "Surrogate":
        data = json.loads(Path(path).read_text())
        return cls(base=data["base"], terms=data["terms"], noise_std=data["noise_std"],
                   seed_correlation=data.get("seed_correlation", 0.5), budget_tokens=data.get("budget_tokens"),
                   prior=data.get("prior", {}), fit=data.get("fit", {}))

    def save(self, path: Path) -> None:
        data = {"base": self.base, "terms": self.terms, "noise_std": self.noise_std,
                "seed_correlation": self.seed_correlation, "budget_tokens": self.budget_tokens,
                "prior": self.prior, "fit": self.fit}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    # -- fitting -----------------------------------------------------------------------------------------------

    def fitted(self, evaluations: Sequence[Mapping], *, prior_weight: float = 1.0) -> "Surrogate":
        """A surrogate fitted to real evaluations (records with "source", "seed", "val_bpb"), from this one's prior
        (its own parameters when it has none). prior_weight: how many evaluations' worth of evidence the prior is
        worth per coefficient, in units of the noise. The noise size is the spread of the evaluations that share a
        source (when some do), else kept."""
        prior = self.prior or {"base": self.base, "terms": self.terms}
        names = [n for n in BOX if n in prior["terms"]]
        rows = [e for e in evaluations if e.get("val_bpb") is not None and math.isfinite(e["val_bpb"])]
        theta0 = _coefficients(prior, names)
        if not rows:
            return self
        X = np.array([_features(unit_point(e["source"]), names) for e in rows])
        y = np.array([e["val_bpb"] for e in rows])
        noise = _within_source_std(rows) or self.noise_std
        lam = prior_weight / np.maximum(np.abs(theta0), 0.05) ** 2   # each coefficient may move about its size
        fixed = np.zeros(len(theta0), dtype=bool)                     # quadratic coefficients held at 0
        for _ in range(len(names) + 1):
            free = ~fixed
            A = X[:, free].T @ X[:, free] / noise**2 + np.diag(lam[free])
            b = X[:, free].T @ y / noise**2 + lam[free] * theta0[free]
            theta = np.zeros(len(theta0))
            theta[free] = np.linalg.solve(A, b)
            negative = [2 + 2 * i for i in range(len(names)) if theta[2 + 2 * i] < 0]
            if not negative:
                break
            fixed[negative] = True
        terms, base = _terms(theta, names)
        residual = y - X @ theta
        fit = {"evaluations": len(rows), "sources": len({content_hash(e["source"]) for e in rows}),
               "residual_std": float(np.std(residual)), "noise_std_measured": _within_source_std(rows),
               "method": "ridge least squares on (u, u^2) per constant towards the prior's coefficients",
               "prior_weight": prior_weight}
        return Surrogate(base=base, terms=terms, noise_std=noise, seed_correlation=self.seed_correlation,
                         budget_tokens=self.budget_tokens, prior=prior, fit=fit)


def _features(u: Mapping[str, float], names: Sequence[str]) -> list[float]:
    out = [1.0]
    for n in names:
        out += [u[n], u[n] ** 2]
    return out


def _coefficients(params: Mapping, names: Sequence[str]) -> np.ndarray:
    """The linear coefficients (constant, then u and u^2 per name) of base + sum a (u - c)^2."""
    const = params["base"] + sum(params["terms"][n]["curvature"] * params["terms"][n]["optimum"] ** 2 for n in names)
    out = [const]
    for n in names:
        a, c = params["terms"][n]["curvature"], params["terms"][n]["optimum"]
        out += [-2.0 * a * c, a]
    return np.array(out)


def _terms(theta: np.ndarray, names: Sequence[str]) -> tuple[dict, float]:
    terms = {}
    for i, n in enumerate(names):
        w, q = float(theta[1 + 2 * i]), max(0.0, float(theta[2 + 2 * i]))
        best = min(1.0, max(0.0, -w / (2.0 * q))) if q > 0 else (0.0 if w > 0 else 1.0)
        terms[n] = {"linear": w, "quadratic": q, "optimum": round(best, 4)}
    return terms, float(theta[0])


def terms_from_prior(prior: Mapping) -> tuple[dict, float]:
    """The prior's (curvature, optimum) terms as the model's coefficients, and its base."""
    names = [n for n in BOX if n in prior["terms"]]
    return _terms(_coefficients(prior, names), names)


def _within_source_std(rows: Sequence[Mapping]) -> float | None:
    """The pooled spread of the evaluations that share a source (the seed noise), or None."""
    groups: dict[str, list[float]] = {}
    for e in rows:
        groups.setdefault(content_hash(e["source"]), []).append(e["val_bpb"])
    pooled = [(len(v) - 1, statistics.variance(v)) for v in groups.values() if len(v) > 1]
    dof = sum(d for d, _ in pooled)
    return math.sqrt(sum(d * v for d, v in pooled) / dof) if dof else None
