"""echoprime.io."""
