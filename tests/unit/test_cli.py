"""The `echoprime` command: help everywhere, one-line errors for bad input, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echoprime.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "echoprime.cli", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"config", "synth", "quickstart"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: echoprime {name}" in out


def test_config_show_prints_resolved_yaml(capsys):
    assert main(["config", "show", "--config", str(ROOT / "configs/tiny-cpu.yaml"), "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 2" in out and "video_encoder: echoprime_tiny" in out


def test_missing_config_is_one_line_error():
    r = _run("config", "show", "--config", "configs/does-not-exist.yaml")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "config file not found" in lines[0] and "does-not-exist.yaml" in lines[0]


@pytest.mark.parametrize("n", ["0", "-3"])
def test_synth_rejects_non_positive_studies(tmp_path, n):
    out = tmp_path / "o"
    r = _run("synth", "--no-ray", "--studies", n, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--studies must be at least 1" in r.stderr
    assert not (out / "manifest.parquet").exists()


def test_synth_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run("synth", "--no-ray", "--studies", "1", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not writable" in r.stderr and str(blocker / "sub") in r.stderr


def test_quickstart_bad_override_fails_before_work(tmp_path):
    out = tmp_path / "qs"
    r = _run("quickstart", "--out", str(out), "train.epochz=1")
    assert r.returncode == 2 and "unknown key 'train.epochz'" in r.stderr
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("command", ["ingest", "batch-interpret"])
def test_a_qido_query_without_an_archive_is_refused(tmp_path, command, capsys):
    """--study and --dates choose an archive's studies: with --input they would be ignored."""
    argv = [command, "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--study", "1.2.3"]
    argv += ["--bundle", str(tmp_path / "b")] if command == "batch-interpret" else []
    assert main(argv) == 2
    assert "add --dicomweb URL" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):  # one source, not both
        main([command, "--input", str(tmp_path), "--dicomweb", "http://pacs/dicom-web", "--out", "o"])
    capsys.readouterr()
