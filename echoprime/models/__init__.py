"""echoprime.models."""
