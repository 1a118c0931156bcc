"""Shared fixtures: the repository, the embedded default model, and the perplex command line
whose numbers the Python package must reproduce."""

import os
import subprocess
from pathlib import Path

import pytest

import perplex

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = str(REPOSITORY / "models" / "default")
HELDOUT = (REPOSITORY / "models" / "default" / "heldout.txt").read_text()


@pytest.fixture(scope="session")
def model() -> perplex.Model:
    return perplex.Model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def perplex_cli() -> Path:
    """The command line built from this checkout: $PERPLEX_BIN, else the release binary in the
    cargo target directory (tests/python/run builds it there)."""
    explicit = os.environ.get("PERPLEX_BIN")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPOSITORY / "target"))
    binary = Path(explicit) if explicit else target / "release" / "perplex"
    if not binary.is_file():
        pytest.fail(f"no perplex binary at {binary}: build it (cargo build --release) or set PERPLEX_BIN")
    return binary


def run(command, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command from the repository root; fails the test with its output if it fails."""
    done = subprocess.run([str(c) for c in command], cwd=REPOSITORY, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done
