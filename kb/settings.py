"""Settings: the only place that reads KB_* environment variables; everything else takes a Settings."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kb.errors import BadRequest


AUTH_MODES = ("auto", "required", "off")


def _setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    """All tunables of KB Search. Each field names its environment variable and says what it does."""

    content_dir: Path = _setting(Path("content"), "KB_CONTENT_DIR", "Folder of Markdown articles to index.")
    index_dir: Path = _setting(Path("var/index"), "KB_INDEX_DIR", "Folder holding index versions and CURRENT.")
    index_backend: str = _setting("faiss", "KB_INDEX_BACKEND", "Index engine behind kb.index: faiss (FAISS vectors and SQLite FTS5 files in KB_INDEX_DIR) or milvus (collections on KB_MILVUS_URI; needs the milvus extra).")
    ann_min_passages: int = _setting(50_000, "KB_ANN_MIN_PASSAGES", "With KB_INDEX_BACKEND=faiss: an index version of at least this many passages also carries an approximate index (IVF lists of 4-bit product-quantised codes whose candidates are scored again exactly; recall@10 against exact search >= 0.99 measured, docs/benchmarks.md), which dense searches use; smaller ones stay exact. A small edit patches it; set this above your passage count to keep search exact.")
    postings_min_passages: int = _setting(10_000, "KB_POSTINGS_MIN_PASSAGES", "With KB_INDEX_BACKEND=faiss: an index version of at least this many passages (the office KB's 12,775, not the starter content's 310) also carries its BM25 postings as arrays (read from its own FTS5 index when it is built, patched by a small edit), which lexical searches score with numpy instead of SQLite: the same scores as FTS5's bm25(), at a cost that grows far slower with the knowledge base (docs/benchmarks.md). Set it above your passage count to keep FTS5 only.")
    milvus_uri: str = _setting("", "KB_MILVUS_URI", "With KB_INDEX_BACKEND=milvus: a milvus-lite file path (default KB_INDEX_DIR/milvus.db; one process at a time) or a Milvus server URI (http://host:19530).")
    milvus_timeout: float = _setting(10.0, "KB_MILVUS_TIMEOUT", "With KB_INDEX_BACKEND=milvus: seconds a call to Milvus waits for its answer (a build's writes excepted); a call without one answers 503 index_unavailable.")
    milvus_start_wait: float = _setting(120.0, "KB_MILVUS_START_WAIT", "With KB_INDEX_BACKEND=milvus: seconds a starting `kb serve` waits for a Milvus that does not answer (trying again after 1 s, then up to every 5 s) before it exits with status 2 (0: exit at once). A missing or mismatched index is never waited for.")
    host: str = _setting("127.0.0.1", "KB_HOST", "Address the HTTP service binds to.")
    port: int = _setting(8000, "KB_PORT", "Port the HTTP service listens on.")
    model: str = _setting("all-MiniLM-L6-v2", "KB_MODEL", "Embedding model: all-MiniLM-L6-v2 (English; default) or multilingual-e5-small (reads Indonesian; see README). Changing it needs `kb index --full`.")
    encode_precision: str = _setting("auto", "KB_ENCODE_PRECISION", "Precision the model embeds passages in (index builds, kb eval): auto (bf16 on a CPU with AMX tiles, which multiplies bf16 in hardware: a full office-KB build in 0.44 of the fp32 time on this project's machines, vectors within cosine 0.9999 of fp32; fp32 elsewhere), bf16 or fp32. Queries are encoded as KB_QUERY_ENGINE says.")
    query_engine: str = _setting("onnx-int8", "KB_QUERY_ENGINE", "Query encoder: onnx-int8 (the ONNX export with 8-bit weights; fastest), onnx (the fp32 export) or torch.")
    model_cache_dir: Path = _setting(Path("var/models"), "KB_MODEL_CACHE_DIR", "Folder for the ONNX export of the query encoder and the converted multilingual-e5-small.")
    keep_versions: int = _setting(3, "KB_KEEP_VERSIONS", "Index versions kept on disk after a build.")
    passage_max_words: int = _setting(180, "KB_PASSAGE_MAX_WORDS", "Upper bound of words in a passage (model reads 256 word pieces).")
    passage_min_words: int = _setting(40, "KB_PASSAGE_MIN_WORDS", "Sections shorter than this merge with the next one.")
    batch_size: int = _setting(16, "KB_BATCH_SIZE", "Passages per embedding batch: 16 embeds faster than 64 on every model and precision measured here (MiniLM bf16 0.90-0.94 of the time, fp32 0.82, multilingual-e5-small bf16 0.73; the vectors within cosine 0.99998; the tuning and check sets' figures in docs/quality.md, \"Sixteen passages a batch\") and holds less memory (docs/benchmarks.md, \"Sixteen passages a batch\").")
    candidates: int = _setting(100, "KB_CANDIDATES", "Passages taken from each retrieval arm before fusion.")
    lexical_weight: float = _setting(0.07, "KB_LEXICAL_WEIGHT", "Weight of the min-max normalised BM25 score added to the normalised dense score.")
    lexical_weight_id: float = _setting(0.3, "KB_LEXICAL_WEIGHT_ID", "Lexical weight for Indonesian queries: the model reads English only, so BM25 counts for more.")
    title_weight: float = _setting(0.05, "KB_TITLE_WEIGHT", "Weight of the min-max normalised cosine between the query and a passage's article title.")
    lexical_budget: float = _setting(0.3, "KB_LEXICAL_BUDGET", "On a knowledge base of over KB_LEXICAL_BUDGET_ABOVE passages, the lexical query keeps its rarest words while their summed passage counts (the BM25 postings it reads) stay within this share of the passages (its 3 rarest always; words no passage has cost nothing). 0: no budget.")
    lexical_budget_above: int = _setting(50_000, "KB_LEXICAL_BUDGET_ABOVE", "Passages above which KB_LEXICAL_BUDGET bounds the lexical query (0: always).")
    query_max_words: int = _setting(200, "KB_QUERY_MAX_WORDS", "Words of a ticket kept for the embedded query (subject first, then its most informative sentences, in their order; MiniLM reads the first 256 word pieces, about 160-200 words).")
    language_weight: float = _setting(0.2, "KB_LANGUAGE_WEIGHT", "On a knowledge base in several languages, how much a passage in an English-preferring agent's language (the page's UI language, else the query's or ticket's) adds to the fused score.")
    language_weight_id: float = _setting(0.0, "KB_LANGUAGE_WEIGHT_ID", "The same for agents preferring Indonesian (0: Indonesian agents read the English articles, which hold most answers; a preference cost Indonesian tickets with English answers 0.13 MRR@10).")
    translate_indonesian: bool = _setting(True, "KB_TRANSLATE_INDONESIAN", "Render Indonesian queries into English with the support glossary before retrieval.")
    confidence_threshold: float = _setting(0.5, "KB_CONFIDENCE_THRESHOLD", "Calibrated probability above which a response says confident: true.")
    max_query_chars: int = _setting(20_000, "KB_MAX_QUERY_CHARS", "Longest query or ticket text accepted.")
    max_body_bytes: int = _setting(1_048_576, "KB_MAX_BODY_BYTES", "Largest request body accepted (1 MiB; webhooks: KB_WEBHOOK_MAX_BYTES): 413 beyond, before the body is read (by Content-Length, or counted as a chunked body arrives).")
    base_url: str = _setting("/articles", "KB_BASE_URL", "Prefix of article URLs returned to clients.")
    log_level: str = _setting("info", "KB_LOG_LEVEL", "Log level of the service.")
    database_url: str = _setting("", "KB_DATABASE_URL", "PostgreSQL URL (postgresql://user:password@host:5432/dbname) holding the side stores README's 'Several replicas: one PostgreSQL' lists, shared by every `kb serve` replica and `kb keys` that name it; unset: each store in its own SQLite file (the KB_*_DB settings).")
    feedback_db: Path = _setting(Path("var/feedback.sqlite"), "KB_FEEDBACK_DB", "SQLite file where agents' yes/no feedback is recorded.")
    feedback_max_query_chars: int = _setting(1000, "KB_FEEDBACK_MAX_QUERY_CHARS", "Longest query a feedback answer may carry (400 beyond): search words, not tickets; a ticket's feedback sends the response's answer_id instead.")
    feedback_rate_per_min: int = _setting(60, "KB_FEEDBACK_RATE_PER_MIN", "Feedback answers one client (API key, signed-in agent or address) may send a minute to one worker process; 429 with Retry-After beyond (0: no limit).")
    usage_db: Path = _setting(Path("var/usage.sqlite"), "KB_USAGE_DB", "SQLite file counting which articles searches returned (no query text), for `kb check`.")
    watch: bool = _setting(True, "KB_WATCH", "`kb serve` watches the content folder and re-indexes on change (--no-watch turns it off).")
    watch_debounce_ms: int = _setting(300, "KB_WATCH_DEBOUNCE_MS", "Quiet time after the last file change before a watch-triggered build starts.")
    reload_poll_seconds: float = _setting(1.0, "KB_RELOAD_POLL_SECONDS", "How often the service checks CURRENT for versions built by another process (0: never).")
    verify_seconds: float = _setting(300.0, "KB_VERIFY_SECONDS", "How often the service reads the files of the index version in service again against their checksums (0: only when a version is opened); a damaged one is taken out of service.")
    admin_token: str = _setting("", "KB_ADMIN_TOKEN", "Bearer token required by /api/admin/* when set (unset: open, as the service binds to loopback).")
    usage_min_days: int = _setting(7, "KB_USAGE_MIN_DAYS", "`kb check`: never-returned articles are reported once the usage log covers at least this many days.")
    stale_days: int = _setting(180, "KB_STALE_DAYS", "`kb check`: articles whose `reviewed` date is older than this are stale.")
    draft_max_age_days: int = _setting(30, "KB_DRAFT_MAX_AGE_DAYS", "`kb check`: drafts older than this (by `reviewed` date or file time) are reported.")
    near_duplicate_threshold: float = _setting(0.95, "KB_NEAR_DUPLICATE_THRESHOLD", "`kb check`: cosine of two articles' mean passage vectors above which they are near-duplicates.")
    # ---- analytics (README: "What is stored, where, how long") ----
    analytics_db: Path = _setting(Path("var/analytics.sqlite"), "KB_ANALYTICS_DB", "SQLite file of the analytics event log (searches, suggestions and what agents did with them; redacted text only).")
    analytics_store_text: bool = _setting(True, "KB_ANALYTICS_STORE_TEXT", "Store redacted query and ticket text in the event log and the redacted query of feedback (false: no text at all in either; reports use counts and topics computed at write time).")
    analytics_retention_days: int = _setting(90, "KB_ANALYTICS_RETENTION_DAYS", "Events and feedback older than this are deleted (checked daily).")
    analytics_queue_size: int = _setting(10_000, "KB_ANALYTICS_QUEUE_SIZE", "Events waiting for the writer; beyond it new events are dropped and counted, never waited for.")
    # ---- access control (README: "Put it on your network") ----
    auth: str = _setting("auto", "KB_AUTH", "API keys: auto (open on a loopback bind, required on any other), required, or off.")
    auth_db: Path = _setting(Path("var/auth.sqlite"), "KB_AUTH_DB", "SQLite file of API keys (salted hashes only), sign-in sessions' signing secret and the audit log.")
    trusted_proxies: str = _setting("", "KB_TRUSTED_PROXIES", "Comma-separated addresses or CIDR ranges of reverse proxies whose user header (KB_PROXY_USER_HEADER) signs agents in.")
    proxy_user_header: str = _setting("X-Forwarded-User", "KB_PROXY_USER_HEADER", "Header naming the agent authenticated by a trusted proxy (oauth2-proxy sends X-Forwarded-User).")
    session_hours: int = _setting(12, "KB_SESSION_HOURS", "How long a sign-in with a personal key lasts (signed, HttpOnly cookie).")
    analytics_users: str = _setting("", "KB_ANALYTICS_USERS", "Comma-separated agents (names a trusted proxy sends) who may also read reports and metrics (the analytics scope).")
    frame_ancestors: str = _setting("", "KB_FRAME_ANCESTORS", "Space- or comma-separated origins allowed to frame /widget (e.g. https://acme.zendesk.com); none by default.")
    cors_origins: str = _setting("", "KB_CORS_ORIGINS", "Comma-separated origins whose browser-side apps may call the JSON API (CORS); none by default.")
    image_origins: str = _setting("", "KB_IMAGE_ORIGINS", "Space- or comma-separated origins (e.g. https://learn.microsoft.com, https://*.example.com) whose images articles may show on the agent pages (CSP img-src); none by default: images from other sites are not loaded.")
    allowed_hosts: str = _setting("", "KB_ALLOWED_HOSTS", "Space- or comma-separated Host names the service answers to (`*.example.com`: its subdomains; `*`: any), besides localhost, 127.0.0.1, [::1], the bind address, the address a request came in on and, on a network bind, the machine's name; any other Host header gets 400 (DNS rebinding).")
    # ---- helpdesk webhooks and write-back (README: "Connect your helpdesk") ----
    zendesk_webhook_secret: str = _setting("", "KB_ZENDESK_WEBHOOK_SECRET", "Signing secret of the Zendesk webhook: X-Zendesk-Webhook-Signature is required and checked when set.")
    webhook_replay_seconds: int = _setting(300, "KB_WEBHOOK_REPLAY_SECONDS", "Signed webhooks older than this are refused; the same ticket within it is answered from the first result.")
    webhook_db: Path = _setting(Path("var/webhooks.sqlite"), "KB_WEBHOOK_DB", "SQLite file shared by the worker processes: which tickets a webhook answered within KB_WEBHOOK_REPLAY_SECONDS (ticket ids and times, no ticket text), so that a retry reaching another worker posts no second note.")
    webhook_max_bytes: int = _setting(1_000_000, "KB_WEBHOOK_MAX_BYTES", "Largest webhook body accepted (413 beyond).")
    generic_webhook_map: str = _setting('{"subject": "/subject", "body": "/body", "tags": "/tags", "language": "/language", "ticket_id": "/id"}', "KB_GENERIC_WEBHOOK_MAP", "JSON object mapping subject, body, tags, language and ticket_id to JSON pointers (RFC 6901) into the body of POST /api/webhooks/generic.")
    helpdesk_api_url: str = _setting("", "KB_HELPDESK_API_URL", "Base URL of the helpdesk REST API for write-back (e.g. https://acme.zendesk.com); unset: no write-back.")
    helpdesk_api_user: str = _setting("", "KB_HELPDESK_API_USER", "Helpdesk API user for write-back (Zendesk: the agent e-mail; the token is sent as EMAIL/token:TOKEN).")
    helpdesk_api_token: str = _setting("", "KB_HELPDESK_API_TOKEN", "Helpdesk API token for write-back (Zendesk API token, Freshdesk API key).")
    # ---- serving many agents ----
    workers: int = _setting(1, "KB_WORKERS", "Worker processes of `kb serve` (each follows CURRENT of the same index folder).")
    max_in_flight: int = _setting(4, "KB_MAX_IN_FLIGHT", "Requests one worker process serves at once; others wait (KB_MAX_QUEUE, KB_MAX_QUEUE_WAIT_MS) or get 503 with Retry-After. /healthz and /metrics never wait. 0: no limit.")
    max_queue: int = _setting(8, "KB_MAX_QUEUE", "Requests one worker process lets wait for a slot; beyond, 503 with Retry-After at once.")
    max_queue_wait_ms: int = _setting(250, "KB_MAX_QUEUE_WAIT_MS", "Longest a request waits for a slot before it gets 503 with Retry-After.")


def _convert(raw: str, kind: type, name: str) -> Any:
    try:
        if kind is Path:
            return Path(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        return raw
    except ValueError:
        raise BadRequest(f"setting {name}={raw!r} is not a valid {kind.__name__}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults, then KB_* variables of `environ`, then non-None `overrides` (CLI flags)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    kinds = {"Path": Path, "int": int, "float": float, "str": str, "bool": bool}
    for f in dataclasses.fields(Settings):
        env = f.metadata["env"]
        if env in environ and environ[env] != "":
            values[f.name] = _convert(environ[env], kinds[str(f.type)], env)
    for name, value in overrides.items():
        if value is not None:
            values[name] = Path(value) if name.endswith("_dir") else value
    settings = Settings(**values)
    if not 1 <= settings.port <= 65535:
        raise BadRequest(f"port {settings.port} is out of range 1..65535")
    if settings.auth not in AUTH_MODES:
        raise BadRequest(f"KB_AUTH={settings.auth!r} must be one of {', '.join(AUTH_MODES)}")
    if settings.workers < 1:
        raise BadRequest(f"workers must be at least 1, got {settings.workers}")
    for name in ("max_in_flight", "max_queue", "max_queue_wait_ms", "ann_min_passages",
                 "postings_min_passages"):
        if getattr(settings, name) < 0:
            raise BadRequest(f"KB_{name.upper()}={getattr(settings, name)} must be 0 or more")
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise BadRequest("KB_DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432/dbname), or "
                         "unset for SQLite files")
    from kb.index import BACKENDS

    if settings.index_backend not in BACKENDS:
        raise BadRequest(f"KB_INDEX_BACKEND={settings.index_backend!r} is not an index backend: one of "
                         f"{', '.join(BACKENDS)}")
    if not 0 < settings.milvus_timeout < float("inf"):
        raise BadRequest(f"KB_MILVUS_TIMEOUT={settings.milvus_timeout} must be a number of seconds more than 0")
    if not settings.milvus_start_wait >= 0:
        raise BadRequest(f"KB_MILVUS_START_WAIT={settings.milvus_start_wait} must be 0 or more seconds")
    from kb.embedder import PRECISIONS

    if settings.encode_precision not in PRECISIONS:
        raise BadRequest(f"KB_ENCODE_PRECISION={settings.encode_precision!r} must be one of {', '.join(PRECISIONS)}")
    if settings.max_body_bytes < 1:
        raise BadRequest(f"KB_MAX_BODY_BYTES must be at least 1, got {settings.max_body_bytes}")
    return settings


def describe_settings() -> list[tuple[str, str, Any, str]]:
    """(field, env var, default, help) for every setting, for docs and `kb --help`."""
    return [(f.name, f.metadata["env"], f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)]


def to_environment(settings: Settings) -> dict[str, str]:
    """The KB_* variables that make `load_settings` return `settings` again (for processes started from this one,
    such as the workers of `kb serve --workers N`)."""
    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return {f.metadata["env"]: text(getattr(settings, f.name)) for f in dataclasses.fields(Settings)}
