"""scripts/setup.sh: installs on a fresh checkout, skips pip while its stamp matches, reinstalls on change."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent

# Stands in for .venv/bin/python: logs every pip call (exit code from PIP_EXIT), runs -c with the real Python.
FAKE_PYTHON = f"""#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
    echo "${{*:3}}" >> "$(dirname "$0")/pip.log"
    exit "${{PIP_EXIT:-0}}"
fi
exec {sys.executable} "$@"
"""


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the repository's setup script and pyproject.toml with a fake, already created .venv."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return tmp_path


def setup(checkout: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run setup.sh; return the result and the pip calls it made (the log is cleared)."""
    log = checkout / ".venv" / "bin" / "pip.log"
    log.unlink(missing_ok=True)
    result = subprocess.run(["bash", str(checkout / "scripts" / "setup.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", **env})
    return result, log.read_text().splitlines() if log.exists() else []


def install_kb(checkout: Path) -> None:
    """What the editable install leaves behind: the console script."""
    kb = checkout / ".venv" / "bin" / "kb"
    kb.write_text("#!/bin/sh\n")
    kb.chmod(0o755)


def test_installs_once_then_skips_pip_until_pyproject_changes(checkout):
    result, calls = setup(checkout)
    assert result.returncode == 0, result.stderr
    assert len(calls) == 3 and "torch==2.13.0" in calls[1] and '-e .[test,milvus]' in calls[2]
    install_kb(checkout)
    result, calls = setup(checkout)
    assert result.returncode == 0 and calls == []  # the stamp matches: pip is not run again
    with open(checkout / "pyproject.toml", "a") as f:
        f.write("\n# a new dependency\n")
    result, calls = setup(checkout)
    assert result.returncode == 0 and len(calls) == 3
    assert setup(checkout, KB_REINSTALL="1")[1] != []


def test_reinstalls_when_kb_script_is_missing(checkout):
    setup(checkout)  # no .venv/bin/kb appears: the install did not produce the console script
    assert len(setup(checkout)[1]) == 3


def test_failed_install_leaves_no_stamp(checkout):
    install_kb(checkout)
    result, calls = setup(checkout, PIP_EXIT="1")
    assert result.returncode != 0 and len(calls) == 1
    assert not (checkout / ".venv" / ".kb-install-stamp").exists()
    assert len(setup(checkout)[1]) == 3  # tried again, not skipped
