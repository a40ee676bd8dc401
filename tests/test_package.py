"""The wheel: templates, static files, vendored docs assets and glossary inside it; installed (not editable), it
indexes and serves on its own from a folder outside the checkout."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process

REPO = Path(__file__).parent.parent
FIXTURE_CONTENT = Path(__file__).parent / "fixtures" / "content"
PACKAGES = ("kb", "indexer", "search", "cli")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OUTER_SITE = sysconfig.get_paths()["purelib"]  # the project's .venv, where the dependencies are installed
INDONESIAN_TICKET = {"subject": "", "body": "Halo, Outlook saya terus meminta kata sandi. Terima kasih", "k": 3}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built offline from a copy of the sources: an in-tree build would write build/ and *.egg-info
    into the checkout other people work in."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    [built] = (root / "dist").glob("kb_search-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    """The environment of the installed commands: nothing pointing into the checkout, no model hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
           and not k.startswith("KB_")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (--no-deps); the .venv's site-packages is appended
    to its sys.path by a .pth file for the dependencies. A path in a .pth file is not a site directory, so the
    .venv's own .pth files (the editable install's finder pointing at the checkout) are not run."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    [site] = (env / "lib").glob("python3.*/site-packages")
    (site / "kb-search-test-dependencies.pth").write_text(OUTER_SITE + "\n")
    return env


def test_wheel_holds_templates_static_files_vendored_docs_assets_and_glossary(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("search/glossary_id_en.tsv", "search/web/templates/base.html", "search/web/templates/search.html",
                 "search/web/templates/api_docs.html", "search/web/static/style.css", "search/web/static/app.js",
                 "search/web/static/api-docs.js", "search/web/static/vendor/README.md",
                 "search/web/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
                 "search/web/static/vendor/swagger-ui-dist/swagger-ui.css",
                 "search/web/static/vendor/swagger-ui-dist/LICENSE",
                 "search/web/static/vendor/redoc/redoc.standalone.js", "search/web/static/vendor/redoc/LICENSE"):
        assert name in names, name
    web = {"search/" + p.relative_to(REPO / "search").as_posix() for p in (REPO / "search" / "web").rglob("*")
           if p.is_file()}
    assert web <= names, sorted(web - names)
    assert {name.split("/")[0] for name in names} == {*PACKAGES, f"kb_search-{VERSION}.dist-info"}


def test_installed_package_comes_from_the_fresh_environment_not_the_checkout(venv, clean_env, tmp_path):
    probe = ("import importlib.metadata as m, json, sys, cli, indexer, kb, search, search.glossary as g; "
             "print(json.dumps({'modules': [x.__file__ for x in (cli, indexer, kb, search)], "
             "'glossary': str(g.GLOSSARY_FILE), 'dist': str(m.distribution('kb-search').locate_file('')), "
             "'finders': [repr(f) for f in sys.meta_path]}))")
    found = json.loads(subprocess.run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=clean_env,
                                      capture_output=True, text=True, check=True, timeout=120).stdout)
    for path in (*found["modules"], found["glossary"], found["dist"]):
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(REPO), path
    assert not any("editable" in finder.lower() for finder in found["finders"]), found["finders"]
    version = subprocess.run([venv / "bin" / "kb", "--version"], cwd=tmp_path, env=clean_env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"kb {VERSION}"


@contextlib.contextmanager
def serving(command: list, cwd: Path, env: dict[str, str], port: int, log_path: Path, timeout: float = 240):
    """Run a server command; yield its base URL once /healthz answers 200. On every way out, SIGTERM, a bounded
    wait, then SIGKILL to its process group (conftest's stop_process)."""
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"server did not come up:\n{log_path.read_text()}"
            time.sleep(0.3)
        yield base
    finally:
        stop_process(proc, signal.SIGTERM, timeout=30, group=True)


@pytest.mark.model
def test_installed_kb_indexes_and_serves_pages_docs_and_the_glossary_outside_the_checkout(venv, clean_env, tmp_path):
    work = tmp_path / "work"  # default folders: ./content, ./var/index, ./var/*.sqlite
    shutil.copytree(FIXTURE_CONTENT, work / "content")
    env = {**clean_env, "KB_MODEL_CACHE_DIR": str(tmp_path / "models"), "KB_LOG_LEVEL": "warning"}
    kb = str(venv / "bin" / "kb")
    index = subprocess.run([kb, "index", "--quiet"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert index.returncode == 0, index.stdout + index.stderr
    assert (work / "var" / "index" / "CURRENT").is_file()

    port = free_port()
    with serving([kb, "serve", "--no-watch", "--port", str(port)], work, env, port, tmp_path / "serve.log") as base:
        with httpx.Client(base_url=base, timeout=60) as http:
            page = http.get("/", headers={"accept": "text/html"})
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert 'class="page-search"' in page.text and 'href="/static/style.css"' in page.text  # base.html

            style = http.get("/static/style.css")
            assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")

            docs = http.get("/docs")
            assert docs.status_code == 200 and not re.search(r"https?://", docs.text)
            scripts = re.findall(r'<script src="([^"]+)"', docs.text)
            assert "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in scripts
            for src in scripts:
                asset = http.get(src)
                assert asset.status_code == 200 and "javascript" in asset.headers["content-type"], src

            suggest = http.post("/api/suggest", json=INDONESIAN_TICKET)
            assert suggest.status_code == 200, suggest.text
            body = suggest.json()
            # "password" is nowhere in the ticket: only the packaged glossary's rendering puts it in the query
            assert body["query"]["language"] == "id" and "password" in body["query"]["text"].lower(), body["query"]
            assert body["answers"] and body["articles"]
