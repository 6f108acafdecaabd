"""Ray Serve inference graph for echoprime."""
