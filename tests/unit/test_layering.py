"""The library never imports Ray (STYLE.md habit 1): every echoprime module imports with ray blocked."""

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
