"""Confounder tests on learned features and confounder-free saliency by partial back-propagation."""
