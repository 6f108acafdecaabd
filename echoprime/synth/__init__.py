"""echoprime.synth."""
