"""echoprime.training."""
