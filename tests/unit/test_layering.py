"""The library never imports Ray (Ray is plumbing around it, docs/architecture.md): every echoprime
module imports with ray blocked (tests/unit/test_architecture.py reads the same rule from the source)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_echoprime_imports_without_ray():
    code = textwrap.dedent(
        """
        import importlib, importlib.abc, pkgutil, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ImportError(f"echoprime must not import {name}")
                return None

        sys.meta_path.insert(0, Block())
        import echoprime
        names = [m.name for m in pkgutil.walk_packages(echoprime.__path__, "echoprime.")]
        for name in names:
            importlib.import_module(name)
        from echoprime.cli import build_parser
        build_parser()  # building the CLI must not import ray either (jobs import it when they run)
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "ray got imported"
        print(len(names))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 5


def test_tiny_models_load_without_transformers_or_torchvision():
    """A process that runs only the tiny video tower, view classifier and attention (a Ray Data
    embedding actor, a Serve replica) must not pay the ~5 s imports of transformers/torchvision."""
    code = textwrap.dedent(
        """
        import sys
        from echoprime.models import create_model, list_models

        assert "echoprime_tiny" in list_models("video") and "tiny_bert" in list_models("text")
        create_model("echoprime_tiny", frames=4, size=16)
        create_model("tiny_views")
        heavy = sorted(m for m in ("transformers", "torchvision") if m in sys.modules)
        assert not heavy, f"imported {heavy}"
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
