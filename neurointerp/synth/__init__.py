"""Synthetic cohorts with planted, known effects (2D Gaussians, 3D brain phantom)."""
