"""Smooth analytic deformation fields made of Gaussian bumps, with exact Jacobians.

A field is a sum of bumps, each with a centre ``c``, a radius ``r``, a radial amplitude ``a``
and a translation vector ``w``::

    v(y) = sum_k e_k(y) * (a_k * (y - c_k) + w_k),    e_k(y) = exp(-|y - c_k|^2 / (2 r_k^2))

(units: mm). ``a < 0`` pulls tissue towards the centre (atrophy, log-Jacobian about ``3a`` at
the centre), ``a > 0`` pushes it out (expansion). The forward map template -> subject is
``psi(y) = y + v(y)``; its Jacobian matrix is ``I + sum_k e_k (a_k I - (a_k d_k + w_k) d_k^T / r_k^2)``
with ``d_k = y - c_k``. The inverse map is found by fixed-point iteration
``y = x - v(y)``, which converges because every field used here has ``|grad v| < 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class BumpField:
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    radial: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def __post_init__(self):
        self.centres = np.asarray(self.centres, dtype=np.float64).reshape(-1, 3)
        k = len(self.centres)
        self.radii = np.broadcast_to(np.asarray(self.radii, dtype=np.float64), (k,)).copy()
        self.radial = np.broadcast_to(np.asarray(self.radial, dtype=np.float64), (k,)).copy()
        self.vectors = np.broadcast_to(np.asarray(self.vectors, dtype=np.float64).reshape(-1, 3) if np.size(self.vectors) else np.zeros((k, 3)), (k, 3)).copy()

    def __len__(self) -> int:
        return len(self.centres)

    def scaled(self, s: float) -> "BumpField":
        return BumpField(self.centres, self.radii, self.radial * s, self.vectors * s)

    def __add__(self, other: "BumpField") -> "BumpField":
        return BumpField(
            np.concatenate([self.centres, other.centres]),
            np.concatenate([self.radii, other.radii]),
            np.concatenate([self.radial, other.radial]),
            np.concatenate([self.vectors, other.vectors]),
        )

    def _active(self):
        keep = (self.radial != 0) | np.any(self.vectors != 0, axis=1)
        return self.centres[keep], self.radii[keep], self.radial[keep], self.vectors[keep]

    def displacement(self, points: np.ndarray, cutoff: float = 3.5) -> np.ndarray:
        """``v(points)`` for points ``(P, 3)`` in mm (dtype kept).

        Each bump is evaluated only within ``cutoff`` radii of its centre (per axis), where
        ``exp(-cutoff^2 / 2) < 0.22 %`` of its peak; pass ``cutoff=np.inf`` for the exact sum.
        """
        points = np.asarray(points)
        dt = points.dtype.type
        cols = [np.ascontiguousarray(points[:, i]) for i in range(3)]
        out = np.zeros((3, len(points)), dtype=points.dtype)
        for c, r, a, w in zip(*self._active()):
            reach = cutoff * r
            if np.isfinite(reach):
                inside = np.abs(cols[0] - dt(c[0])) < reach
                inside &= np.abs(cols[1] - dt(c[1])) < reach
                inside &= np.abs(cols[2] - dt(c[2])) < reach
                sel = np.flatnonzero(inside)
                if sel.size == 0:
                    continue
            else:
                sel = slice(None)
            d = [cols[i][sel] - dt(c[i]) for i in range(3)]
            e = np.exp((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) * dt(-0.5 / (r * r)))
            for i in range(3):
                out[i, sel] += e * (dt(a) * d[i] + dt(w[i]))
        return out.T

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """Jacobian matrices ``I + grad v`` at ``points``, shape ``(P, 3, 3)``."""
        points = np.asarray(points, dtype=np.float64)
        jac = np.broadcast_to(np.eye(3), (len(points), 3, 3)).copy()
        for c, r, a, w in zip(*self._active()):
            d = points - c
            e = np.exp(-np.einsum("pi,pi->p", d, d) / (2.0 * r * r))
            jac += (e * a)[:, None, None] * np.eye(3)
            jac -= (e / (r * r))[:, None, None] * np.einsum("pi,pj->pij", a * d + w, d)
        return jac

    def log_jacobian(self, points: np.ndarray) -> np.ndarray:
        """``log det(I + grad v)``: > 0 expansion, < 0 shrinkage (template -> subject)."""
        det = np.linalg.det(self.jacobian(points))
        if np.any(det <= 0):
            raise ValueError("deformation folds (non-positive Jacobian determinant)")
        return np.log(det)

    def inverse(self, points: np.ndarray, iterations: int = 30, tol: float = 1e-3) -> np.ndarray:
        """Solve ``y + v(y) = x`` for every point ``x`` (fixed-point iteration, dtype kept).

        Points whose update falls below ``tol`` mm stop iterating (far from the bumps that is
        after one or two steps), so the cost follows the size of the deformed region.
        """
        x = np.asarray(points)
        y = x.copy()
        if len(self) == 0:
            return y
        active = np.arange(len(x))
        for _ in range(iterations):
            new = x[active] - self.displacement(y[active])
            moved = np.abs(new - y[active]).max(axis=1)
            y[active] = new
            active = active[moved > tol]
            if active.size == 0:
                break
        return y


def random_smooth_field(rng: np.random.Generator, low: np.ndarray, high: np.ndarray, n_bumps: int = 16, radius: float = 20.0, amplitude: float = 1.5) -> BumpField:
    """Anatomical variability: ``n_bumps`` random translation bumps inside the box [low, high]."""
    centres = rng.uniform(low, high, size=(n_bumps, 3))
    vectors = rng.normal(0.0, amplitude, size=(n_bumps, 3))
    return BumpField(centres, np.full(n_bumps, radius), np.zeros(n_bumps), vectors)


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
