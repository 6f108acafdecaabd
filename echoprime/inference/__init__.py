"""Interpretation of a study: its input, the bundle parts, the towers and the result."""
