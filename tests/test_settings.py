"""Settings: defaults, environment, overrides, and that every setting is documented."""
from pathlib import Path

import pytest

from kb.errors import BadRequest
from kb.settings import Settings, describe_settings, load_settings

README = Path(__file__).parent.parent / "README.md"


def test_defaults_match_the_contract():
    s = load_settings({})
    assert (s.content_dir, s.index_dir, s.host, s.port) == (Path("content"), Path("var/index"), "127.0.0.1", 8000)


def test_environment_then_flags():
    s = load_settings({"KB_PORT": "9001", "KB_CONTENT_DIR": "/srv/kb", "KB_LEXICAL_WEIGHT": "0.5"}, port=9002)
    assert s.port == 9002 and s.content_dir == Path("/srv/kb") and s.lexical_weight == 0.5


def test_none_override_keeps_environment():
    assert load_settings({"KB_INDEX_DIR": "/x"}, index_dir=None).index_dir == Path("/x")


@pytest.mark.parametrize("env", [{"KB_PORT": "eighty"}, {"KB_PORT": "70000"}, {"KB_LEXICAL_WEIGHT": "high"},
                                 {"KB_ENCODE_PRECISION": "fp16"}])
def test_bad_values_are_clear_errors(env):
    with pytest.raises(BadRequest) as info:
        load_settings(env)
    assert "KB_" in info.value.message or "port" in info.value.message


def test_settings_are_frozen():
    with pytest.raises(Exception):
        Settings().port = 1  # type: ignore[misc]


def test_every_setting_is_documented_in_readme():
    readme = README.read_text(encoding="utf-8")
    for name, env, _default, help_text in describe_settings():
        assert help_text, name
        assert env in readme, f"{env} missing from README"


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "soon"])
def test_the_milvus_timeout_must_be_seconds_above_zero(raw):
    with pytest.raises(BadRequest, match="KB_MILVUS_TIMEOUT"):
        load_settings({"KB_MILVUS_TIMEOUT": raw})
    assert load_settings({"KB_MILVUS_TIMEOUT": "0.5"}).milvus_timeout == 0.5


@pytest.mark.parametrize("raw", ["-1", "nan", "later"])
def test_the_milvus_start_wait_must_be_seconds_from_zero(raw):
    with pytest.raises(BadRequest, match="KB_MILVUS_START_WAIT"):
        load_settings({"KB_MILVUS_START_WAIT": raw})
    assert load_settings({}).milvus_start_wait == 120 and load_settings({"KB_MILVUS_START_WAIT": "0"}).milvus_start_wait == 0
