"""cli/preflight.py and scripts/serve.sh: a taken port or another folder's index stops `kb serve` before any work."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli import preflight
from cli.main import main
from kb.settings import load_settings

REPO = Path(__file__).parent.parent


@pytest.fixture
def busy_port():
    """A port another process would be listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_index(index_dir: Path, built_from: Path) -> None:
    """CURRENT and a manifest recording the content folder, as a build leaves them."""
    (index_dir / "v1").mkdir(parents=True)
    (index_dir / "v1" / "manifest.json").write_text(json.dumps({"build_id": "v1", "content_dir": str(built_from)}))
    (index_dir / "CURRENT").write_text("v1")


def test_check_port_names_the_address_and_the_settings(busy_port):
    with pytest.raises(preflight.PortInUse) as caught:
        preflight.check_port("127.0.0.1", busy_port)
    assert caught.value.message == (f"127.0.0.1:{busy_port} is already in use (another kb serve?): stop it or "
                                    "choose another port with --port or KB_PORT")
    assert caught.value.status == 409
    preflight.check_port("127.0.0.1", free_port())  # a free port passes


def test_check_port_unknown_host():
    with pytest.raises(preflight.BadRequest, match="KB_HOST"):
        preflight.check_port("no-such-host.invalid", free_port())


def test_kb_serve_fails_on_a_taken_port_before_loading_anything(busy_port, tmp_path, monkeypatch, capsys):
    import search.app

    monkeypatch.setattr(search.app, "create_app", lambda *a, **k: pytest.fail("the model was going to be loaded"))
    assert main(["serve", "--port", str(busy_port), "--index-dir", str(tmp_path / "index")]) == 2
    assert f"kb serve: error: 127.0.0.1:{busy_port} is already in use" in capsys.readouterr().err


def test_index_of_another_content_folder_is_refused_when_content_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("KB_CONTENT_DIR", raising=False)
    ours, other = tmp_path / "ours", tmp_path / "other"
    fake_index(tmp_path / "index", other)
    settings = load_settings({}, content_dir=ours, index_dir=tmp_path / "index")
    with pytest.raises(preflight.IndexOfOtherContent) as caught:
        preflight.check_index_content(settings, content_given=True)
    message = caught.value.message
    assert f"built from {other}, not from {ours}" in message and "--index-dir" in message
    assert f"--index-dir {tmp_path / 'index-ours'}" in message
    preflight.check_index_content(settings, content_given=False)  # default content: served, watching declined
    fake_index(tmp_path / "index2", ours)  # the index of this very folder
    preflight.check_index_content(load_settings({}, content_dir=ours, index_dir=tmp_path / "index2"), True)
    preflight.check_index_content(load_settings({}, content_dir=ours, index_dir=tmp_path / "none"), True)


def test_kb_serve_with_another_folders_index_exits_2(tmp_path, monkeypatch, capsys):
    import search.app

    monkeypatch.setattr(search.app, "create_app", lambda *a, **k: pytest.fail("the model was going to be loaded"))
    fake_index(tmp_path / "index", tmp_path / "other")
    (tmp_path / "ours").mkdir()
    argv = ["serve", "--content", str(tmp_path / "ours"), "--index-dir", str(tmp_path / "index"),
            "--port", str(free_port())]
    assert main(argv) == 2
    assert f"was built from {tmp_path / 'other'}" in capsys.readouterr().err
    monkeypatch.setenv("KB_CONTENT_DIR", str(tmp_path / "ours"))  # the environment counts as giving it
    assert main(argv[:1] + argv[3:]) == 2


def test_content_given(monkeypatch):
    monkeypatch.delenv("KB_CONTENT_DIR", raising=False)
    assert preflight.content_given("x") and not preflight.content_given(None)
    monkeypatch.setenv("KB_CONTENT_DIR", "")  # empty is unset, as load_settings reads it
    assert not preflight.content_given(None)
    monkeypatch.setenv("KB_CONTENT_DIR", "kb")
    assert preflight.content_given(None)


# ---- scripts/serve.sh, with setup and `kb` replaced by stand-ins ----------------------------------------
@pytest.fixture
def serve_sh(tmp_path) -> Path:
    """A checkout whose setup.sh does nothing, whose .venv/bin/kb logs its arguments, and whose
    .venv/bin/python is this Python running this repository's cli.preflight."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "serve.sh", tmp_path / "scripts" / "serve.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {tmp_path / "scripts" / "setup.sh": "#!/bin/sh\n",
               bin_dir / "python": f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} \"$@\"\n",
               bin_dir / "kb": f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'kb.log'}\n"}
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def run_serve_sh(checkout: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    result = subprocess.run(["bash", str(checkout / "scripts" / "serve.sh"), *args], capture_output=True, text=True,
                            env=env, cwd=checkout)
    log = checkout / "kb.log"
    return result, log.read_text().splitlines() if log.exists() else []


def test_serve_sh_stops_before_indexing_when_the_port_is_taken(serve_sh, busy_port):
    result, kb_calls = run_serve_sh(serve_sh, "--port", str(busy_port))
    assert result.returncode == 2 and kb_calls == []
    assert f"kb serve: error: 127.0.0.1:{busy_port} is already in use" in result.stderr


def test_serve_sh_indexes_the_folders_kb_serve_will_use(serve_sh):
    port = str(free_port())
    result, kb_calls = run_serve_sh(serve_sh, "--content", "kb-x", "--index-dir", "var/x", "--port", port)
    assert result.returncode == 0, result.stderr
    assert kb_calls == ["index --content kb-x --index-dir var/x",
                        f"serve --content kb-x --index-dir var/x --port {port}"]
    assert run_serve_sh(serve_sh, "--port", port)[1][2:] == ["index --content content --index-dir var/index",
                                                            f"serve --port {port}"]
