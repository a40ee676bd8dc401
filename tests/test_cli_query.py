"""`kb search` / `kb suggest` in process: the verdict with its confidence, --json and --quiet print the result and
nothing else, and a query never imports torch once the ONNX export has been checked."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
REPO = Path(__file__).parent.parent
OUT_OF_SCOPE = "how do I bake sourdough bread"
TICKET = "Hi,\nOutlook keeps asking for my password every few minutes since this morning.\nThanks,\nAnna"


def kb(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env})


@pytest.fixture(scope="module")
def cli_env(real_index, embedder) -> dict:
    """The fixture index, and the model cache where the session's full load left a checked ONNX export."""
    assert list(embedder.cache_dir.glob("query-encoder-*.verified.json")), "the full load records its check"
    return {"KB_INDEX_DIR": str(real_index.index_dir), "KB_MODEL_CACHE_DIR": str(embedder.cache_dir)}


def test_search_json_is_one_object_with_the_confidence(cli_env):
    run = kb("search", "outlook password prompt", "--json", "-k", "3", env=cli_env)
    assert run.returncode == 0 and run.stderr == ""
    result = json.loads(run.stdout)  # the whole of stdout is one JSON object
    assert result["confident"] is True and 0.5 <= result["confidence"] <= 1
    assert result["results"][0]["id"] == "Outlook/outlook-password-prompt"


def test_suggest_json_is_one_object_with_the_confidence(cli_env):
    run = kb("suggest", "--json", "--subject", "Password prompt", env=cli_env, stdin=TICKET)
    assert run.returncode == 0 and run.stderr == ""
    result = json.loads(run.stdout)
    assert result["confident"] is True and isinstance(result["confidence"], float)
    assert result["articles"][0]["id"] == "Outlook/outlook-password-prompt"


def test_the_verdict_comes_first_with_the_confidence(cli_env):
    good = kb("search", "outlook password prompt", env=cli_env)
    assert re.match(r"good match \(confidence (0\.\d\d|1\.00)\)\n1\. Outlook keeps asking for your password",
                    good.stdout), good.stdout
    poor = kb("search", OUT_OF_SCOPE, env=cli_env)
    assert re.match(r"no good article found \(confidence 0\.\d\d\); the closest matches follow\n1\. ", poor.stdout)
    ticket = kb("suggest", env=cli_env, stdin="Hello,\nMy sourdough bread does not rise overnight. Any tips?\nBob")
    assert "\nno good article found (confidence 0." in ticket.stdout and ticket.returncode == 0


def test_the_verdict_names_a_product_no_article_mentions():
    from cli.query import verdict

    assert verdict({"confident": False, "confidence": 0.1, "not_covered": "Zoom"}) == \
        "no good article found (confidence 0.10): no article mentions Zoom; the closest matches follow"
    assert verdict({"confident": False, "confidence": 0.1, "not_covered": None}) == \
        "no good article found (confidence 0.10); the closest matches follow"


def test_lexical_mode_has_no_verdict(cli_env):
    run = kb("search", "password", "--mode", "lexical", "--quiet", env=cli_env)
    assert run.returncode == 0 and run.stdout.startswith("1. ") and "confidence" not in run.stdout


def assert_results_only(stdout: str, sections: tuple[str, ...] = ()) -> None:
    lines = stdout.splitlines()
    assert re.match(r"(good match|no good article found) \(confidence", lines[0]), lines[0]
    for line in lines[1:]:
        assert re.match(r"\d+\. |    ", line) or line in sections, line


def test_quiet_prints_the_results_only(cli_env):
    search = kb("search", "outlook password prompt", "--quiet", env=cli_env)
    assert search.returncode == 0 and search.stderr == ""
    assert_results_only(search.stdout)
    suggest = kb("suggest", "--quiet", env=cli_env, stdin=TICKET)
    assert suggest.returncode == 0 and suggest.stderr == "" and "query:" not in suggest.stdout
    assert_results_only(suggest.stdout, ("answers:", "articles:"))


def test_first_query_loads_torch_silently_and_records_the_check(cli_env, embedder, tmp_path):
    """A cache holding the export but no record of its check: this query loads torch (no "Loading weights", no
    log line under --quiet or --json), makes the default 8-bit file from the fp32 export (silently too), checks it
    without torch and records it, so the next one skips torch."""
    export = next(p for p in embedder.cache_dir.glob("query-encoder-*.onnx") if "int8" not in p.name)
    shutil.copy(export, tmp_path / export.name)
    env = {**cli_env, "KB_MODEL_CACHE_DIR": str(tmp_path)}
    first = kb("search", "outlook password prompt", "--quiet", env=env)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert_results_only(first.stdout)
    assert (tmp_path / f"{export.stem}-int8.verified.json").is_file()
    second = kb("search", "outlook password prompt", "--json", env=env)
    assert second.returncode == 0 and second.stderr == "" and json.loads(second.stdout)["confident"] is True


IMPORTS = """
import sys
from cli.main import main
code = main(sys.argv[1:])
print("modules:", " ".join(name for name in ("torch", "transformers", "sentence_transformers") if name in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize("args", [("search", "outlook password prompt", "--json"), ("suggest", "--json")])
def test_a_query_in_process_never_imports_torch(cli_env, args):
    run = subprocess.run([sys.executable, "-c", IMPORTS, *args], input=TICKET, capture_output=True, text=True,
                         cwd=REPO, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **cli_env})
    assert run.returncode == 0, run.stderr
    body, modules = run.stdout.rsplit("modules:", 1)
    assert modules.strip() == ""
    assert json.loads(body)["confident"] is True
