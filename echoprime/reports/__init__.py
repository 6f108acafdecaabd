"""echoprime.reports."""
