"""Region-shaped volume change: a smooth, compactly supported displacement field with an exact Jacobian.

One *component* per region. Its sources ``c_k`` (cells of a lattice over the region) each carry
a volume ``m_k`` (mm^3; < 0 atrophy, > 0 expansion) spread as a Gaussian of width ``sigma`` mm.
The component's displacement is the gradient of the Newtonian potential of these Gaussians,
tapered to zero outside the region::

    v(y) = w(y) u(y),     u(y) = sum_k m_k d_k q(rho_k),    d_k = y - c_k,  rho_k = |d_k|
    q(rho) = P(3/2, rho^2 / (2 sigma^2)) / (4 pi rho^3)      (P: regularised lower incomplete gamma)
    w(y) = 1 - S((D(y) - inner) / (end - inner)),     S(t) = 6 t^5 - 15 t^4 + 10 t^3 on [0, 1]
    D(y) = -tau log sum_k exp(-rho_k / tau)                  (a smooth distance to the region)
    end  = outer - tau log K                                  (K sources)

``div u = sum_k m_k N(y; c_k, sigma^2 I)`` exactly: with ``m_k = A x`` (region volume in cell
``k``) the volume changes by ``A`` inside the region, its edges blurred by ``sigma``. ``w = 1``
up to ``inner`` mm from the region, so the planted change there is untouched; between
``inner`` and ``end`` the taper gives the same volume back (a compactly supported
diffeomorphism preserves the total volume), and where ``D >= end`` the displacement is exactly
zero. As ``min_k rho_k - tau log K <= D <= min_k rho_k``, every point farther than ``outer`` mm
from all sources has ``D >= end``: it never moves.

The Jacobian is analytic: ``grad v = w grad u + u (grad w)^T`` with
``grad u = sum_k m_k (q I + (q' / rho) d d^T)``, ``q' / rho = (g - 3 q) / rho^2`` (``g``: the
Gaussian density; series near ``rho = 0``) and ``grad w = -S'(t) / (end - inner) * sum_k p_k
d_k / rho_k`` (``p_k`` the soft-min weights). Components add. The forward map is
``psi(y) = y + v(y)``; where ``|grad v|_2 < 1`` everywhere it is a diffeomorphism (identity plus
a contraction) and its inverse is found by fixed-point iteration ``y = x - v(y)``
(:meth:`SourceField.max_gradient_norm` checks the bound on a lattice).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SERIES_X = 1e-2  # below x = rho^2 / (2 sigma^2) the series of q and (g - 3q)/rho^2 are used
_FAR_X = 18.0  # beyond x = 18 (rho = 6 sigma) a source acts as a point volume
_CHUNK = 300_000  # points x sources evaluated at once (memory-bound passes: small chunks stay in cache)


def smoothstep(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S(t) = 6t^5 - 15t^4 + 10t^3`` clipped to [0, 1] (C2) and ``S'(t)``."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0), 30.0 * t * t * (1.0 - t) * (1.0 - t)


def potential_profile(rho: np.ndarray, sigma: float, rho2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``q(rho)`` and ``q'(rho) / rho`` of a unit Gaussian source (float64).

    ``P(3/2, x) = erf(sqrt x) - 2 sqrt(x / pi) exp(-x)``; below ``x = 0.01`` the Taylor series
    (relative error < 1e-7) avoids the cancellation; beyond ``x = 18`` (6 sigma) the Gaussian is
    all inside and ``q = 1 / (4 pi rho^3)``, ``q' / rho = -3 q / rho^2`` (relative error < 1e-6).
    """
    from scipy.special import erf

    rho = np.asarray(rho, dtype=np.float64)
    rho2 = rho * rho if rho2 is None else np.asarray(rho2, dtype=np.float64)
    shape = rho.shape
    rho, rho2 = rho.reshape(-1), rho2.reshape(-1)
    inv_s2 = 1.0 / (2.0 * sigma * sigma)
    g0 = (2.0 * np.pi * sigma * sigma) ** -1.5
    far = rho2 * inv_s2 >= _FAR_X
    inv2 = 1.0 / np.where(far, rho2, 1.0)
    q = np.where(far, np.sqrt(inv2) * inv2 * (1.0 / (4.0 * np.pi)), 0.0)
    dq = -3.0 * q * inv2
    near = np.flatnonzero(~far)
    if near.size:
        r, r2 = rho[near], rho2[near]
        x = r2 * inv_s2
        ex = np.exp(-x)
        small = x < _SERIES_X
        safe = np.where(small, 1.0, r)
        safe2 = np.where(small, 1.0, r2)
        big = (erf(r * (1.0 / (np.sqrt(2.0) * sigma))) - (2.0 / np.sqrt(np.pi)) * np.sqrt(x) * ex) / (4.0 * np.pi * safe2 * safe)
        qn = np.where(small, g0 * (1.0 / 3.0 - x / 5.0 + x * x / 14.0), big)
        q[near] = qn
        dq[near] = np.where(small, g0 * (-1.0 / 5.0 + x / 7.0) / (sigma * sigma), (g0 * ex - 3.0 * qn) / safe2)
    return q.reshape(shape), dq.reshape(shape)


@dataclass
class Component:
    """The sources of one region: centres ``(K, 3)`` mm and volumes ``(K,)`` mm^3."""

    centres: np.ndarray
    masses: np.ndarray
    name: str = ""

    def __post_init__(self):
        self.centres = np.asarray(self.centres, dtype=np.float64).reshape(-1, 3)
        self.masses = np.broadcast_to(np.asarray(self.masses, dtype=np.float64), (len(self.centres),)).copy()


@dataclass
class SourceField:
    """Sum of tapered region components (see the module docstring); mm units."""

    components: list = field(default_factory=list)
    sigma: float = 3.0
    inner: float = 8.0
    outer: float = 20.0
    tau: float = 1.0

    def __post_init__(self):
        self.components = [c if isinstance(c, Component) else Component(*c) for c in self.components]
        if not (self.sigma > 0 and self.tau > 0 and 0 < self.inner < self.outer):
            raise ValueError(f"need sigma, tau > 0 and 0 < inner < outer (got {self.sigma}, {self.tau}, {self.inner}, {self.outer})")
        for c in self.components:
            if len(c.centres) and self._end(c) < self.inner + max(1.0, 0.25 * (self.outer - self.inner)):
                raise ValueError(f"region {c.name or '?'}: {len(c.centres)} sources leave no room for the taper between {self.inner:g} mm and the support {self.outer:g} mm (enlarge the support or the smoothness)")

    def _end(self, comp: "Component") -> float:
        """Where the taper reaches 0 in the smooth distance: ``outer - tau log K``."""
        return self.outer - self.tau * np.log(max(len(comp.centres), 1))

    def _like(self, components) -> "SourceField":
        return SourceField(components, self.sigma, self.inner, self.outer, self.tau)

    def scaled(self, s: float) -> "SourceField":
        return self._like([Component(c.centres, c.masses * float(s), c.name) for c in self.components])

    def __add__(self, other: "SourceField") -> "SourceField":
        if (self.sigma, self.inner, self.outer, self.tau) != (other.sigma, other.inner, other.outer, other.tau):
            raise ValueError("fields with different widths or supports cannot be added")
        return self._like(list(self.components) + list(other.components))

    def _active(self):
        return [c for c in self.components if len(c.centres) and np.any(c.masses != 0)]

    def _box(self, comp: Component) -> tuple[np.ndarray, np.ndarray]:
        """Box holding the component's support (points within ``outer`` of a source)."""
        return comp.centres.min(axis=0) - self.outer, comp.centres.max(axis=0) + self.outer

    def support_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """World box (mm) outside which the displacement is exactly zero (None: zero field)."""
        act = self._active()
        if not act:
            return None
        boxes = [self._box(c) for c in act]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    # ---------------------------------------------------------------- evaluation per component
    def _eval(self, comp: Component, pts: np.ndarray, grad: bool):
        """``(v, grad v or None)`` of one component at ``pts`` (P, 3)."""
        c, m = comp.centres, comp.masses
        d = [pts[:, i, None] - c[None, :, i] for i in range(3)]  # 3 x (P, K)
        rho2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        rho = np.sqrt(rho2)
        # soft-min distance (log-sum-exp, shifted by the nearest source for stability)
        rmin = rho.min(axis=1)
        e = np.exp((rmin[:, None] - rho) * (1.0 / self.tau))
        z = e.sum(axis=1)
        dist = rmin - self.tau * np.log(z)
        end = self._end(comp)
        s, ds = smoothstep((dist - self.inner) / (end - self.inner))
        w = 1.0 - s
        q, dq = potential_profile(rho, self.sigma, rho2)
        qm = q * m
        u = np.stack([(qm * d[i]).sum(axis=1) for i in range(3)], axis=1)
        v = w[:, None] * u
        if not grad:
            return v, None
        dqm = dq * m
        gu = np.empty((len(pts), 3, 3))
        trace = qm.sum(axis=1)
        for i in range(3):
            di = dqm * d[i]
            for j in range(i, 3):
                gu[:, i, j] = (di * d[j]).sum(axis=1) + (trace if i == j else 0.0)
                gu[:, j, i] = gu[:, i, j]
        gv = w[:, None, None] * gu
        shell = (w > 0) & (ds > 0)
        if np.any(shell):
            pw = e[shell] / (z[shell, None] * np.maximum(rho[shell], 1e-12))
            gdist = np.stack([(pw * d[i][shell]).sum(axis=1) for i in range(3)], axis=1)
            gw = -(ds[shell] / (end - self.inner))[:, None] * gdist
            gv[shell] += u[shell, :, None] * gw[:, None, :]
        return v, gv

    def _apply(self, points: np.ndarray, grad: bool):
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        v = np.zeros((len(pts), 3))
        g = np.zeros((len(pts), 3, 3)) if grad else None
        for comp in self._active():
            lo, hi = self._box(comp)
            sel = np.flatnonzero(np.all((pts > lo) & (pts < hi), axis=1))
            step = max(1, _CHUNK // max(1, len(comp.centres)))
            for start in range(0, len(sel), step):
                idx = sel[start : start + step]
                cv, cg = self._eval(comp, pts[idx], grad)
                v[idx] += cv
                if grad:
                    g[idx] += cg
        return v, g

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """``v(points)`` for points ``(P, 3)`` in mm (float64)."""
        return self._apply(points, grad=False)[0]

    def gradient(self, points: np.ndarray) -> np.ndarray:
        """``grad v`` at ``points``: ``(P, 3, 3)``, ``[p, i, j] = d v_i / d y_j``."""
        return self._apply(points, grad=True)[1]

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """Jacobian matrices ``I + grad v`` of ``psi`` at ``points``, ``(P, 3, 3)``."""
        return self.gradient(points) + np.eye(3)

    def log_jacobian(self, points: np.ndarray) -> np.ndarray:
        """``log det(I + grad v)``: > 0 expansion, < 0 shrinkage (template -> deformed)."""
        det = np.linalg.det(self.jacobian(points))
        if np.any(det <= 0):
            raise ValueError("deformation folds (non-positive Jacobian determinant)")
        return np.log(det)

    def divergence(self, points: np.ndarray) -> np.ndarray:
        """``div v`` (the first-order volume change) at ``points``."""
        return np.trace(self.gradient(points), axis1=1, axis2=2)

    def in_support(self, points: np.ndarray) -> np.ndarray:
        """True where the displacement may be non-zero (``D < end`` for some component).

        ``min_k rho_k - tau log K <= D <= min_k rho_k``: a k-d tree settles every point but those
        in the band between, where the soft-min distance is computed.
        """
        from scipy.spatial import cKDTree

        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        out = np.zeros(len(pts), dtype=bool)
        for comp in self._active():
            end = self._end(comp)
            rmin, _ = cKDTree(comp.centres).query(pts, k=1, distance_upper_bound=self.outer)
            out |= rmin < end
            band = np.flatnonzero(~out & (rmin < self.outer))
            step = max(1, _CHUNK // max(1, len(comp.centres)))
            for start in range(0, len(band), step):
                idx = band[start : start + step]
                rho = np.sqrt(sum((pts[idx, i, None] - comp.centres[None, :, i]) ** 2 for i in range(3)))
                r0 = rho.min(axis=1)
                dist = r0 - self.tau * np.log(np.exp(-(rho - r0[:, None]) / self.tau).sum(axis=1))
                out[idx] |= dist < end
        return out

    def max_gradient_norm(self, spacing: float | None = None) -> float:
        """Largest spectral norm of ``grad v`` on a lattice over the support (spacing default sigma/2).

        Below 1 the map ``y -> y + v(y)`` is a diffeomorphism and the fixed-point inverse converges.
        """
        box = self.support_box()
        if box is None:
            return 0.0
        h = float(spacing or self.sigma / 2.0)
        axes = [np.arange(lo, hi + h, h) for lo, hi in zip(*box)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        pts = pts[self.in_support(pts)]
        best = 0.0
        for chunk in np.array_split(pts, max(1, len(pts) // 100_000)):
            if len(chunk):
                best = max(best, float(np.linalg.norm(self.gradient(chunk), ord=2, axis=(1, 2)).max()))
        return best

    def inverse(self, points: np.ndarray, iterations: int = 60, tol: float = 1e-4) -> np.ndarray:
        """Solve ``y + v(y) = x`` for every point ``x`` (fixed-point iteration, float64).

        Raises ``ValueError`` if some point has not converged to ``tol`` mm (the field is then
        not a contraction there: see :meth:`max_gradient_norm`).
        """
        x = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        y = x.copy()
        active = np.flatnonzero(self.in_support(x))
        for _ in range(iterations):
            if active.size == 0:
                break
            new = x[active] - self.displacement(y[active])
            moved = np.abs(new - y[active]).max(axis=1)
            y[active] = new
            active = active[moved > tol]
        if active.size:
            raise ValueError(f"inverse deformation did not converge at {active.size} point(s)")
        return y


def region_sources(points: np.ndarray, voxel_volume: float, spacing: float, origin=None) -> tuple[np.ndarray, np.ndarray]:
    """Bin region voxels (world mm, ``(P, 3)``) into lattice cells of ``spacing`` mm.

    Returns, per cell, the centroid of the region voxels inside it and their volume (mm^3):
    sources whose masses, times the wanted volume change ``A``, make ``div v ~ A`` over the region.
    """
    pts = np.asarray(points, dtype=np.float64)
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    cells = np.floor((pts - origin) / spacing).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centres = np.stack([np.bincount(inverse, weights=pts[:, i]) for i in range(3)], axis=1) / counts[:, None]
    return centres, counts * float(voxel_volume)
