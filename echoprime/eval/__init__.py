"""echoprime.eval."""
