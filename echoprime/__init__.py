"""echoprime: EchoPrime, the multi-view video-language model for echocardiography.

The library never imports Ray: models, preprocessing, losses, retrieval and interpretation
live here; ``ray_jobs/`` and ``serve/`` are thin adapters around it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
