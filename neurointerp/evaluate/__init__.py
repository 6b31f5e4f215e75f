"""Attribution-quality metrics and sanity checks."""
