"""echoprime.retrieval."""
