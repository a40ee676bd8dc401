"""The analytics event log's tables (KB_ANALYTICS_DB, or KB_DATABASE_URL): what the service records and the reports
read."""
from __future__ import annotations

from kb.migrations import Schema

# Kinds of events. search / suggest are answers the service gave; the others are what agents did with them.
ANSWER_KINDS = ("search", "suggest")
ACTION_KINDS = ("open", "copy", "insert", "link", "feedback")
KINDS = ANSWER_KINDS + ACTION_KINDS
# Where an answer was asked for: the agent pages, the widget, an API key (api:<key name>), a helpdesk webhook
# (webhook:zendesk|freshdesk|generic), the command line.
SOURCE_PREFIXES = ("page", "widget", "api:", "webhook:", "cli")
SCHEMA_VERSION = 1

# Event ids are given by the writer (one more than the largest, in its write transaction: SQLite's write lock, and on
# PostgreSQL an advisory lock every writer takes), so ids grow in the order events are committed on both engines:
# the rollups' watermark (kb/event_rollups.py) counts on it.
SQLITE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,               -- ISO 8601 UTC with milliseconds
    day TEXT NOT NULL,              -- YYYY-MM-DD (UTC) of `at`, for grouping by day and week
    kind TEXT NOT NULL,             -- one of KINDS
    source TEXT NOT NULL,           -- page | widget | api:<key name> | webhook:<helpdesk> | cli
    answer_id TEXT,                 -- search/suggest: the id returned to the caller as `answer_id`;
                                    -- actions: the answer the agent acted on (NULL when not known)
    language TEXT,                  -- detected or given language of the query (en, id, ...)
    product TEXT,                   -- product filter of a search; for actions the article's product
    query TEXT,                     -- search/suggest: the cleaned query AFTER redaction (kb/redaction.py);
                                    -- NULL when KB_ANALYTICS_STORE_TEXT=false; never raw customer text
    query_key TEXT,                 -- search/suggest: sha256 (hex, 16 chars) of the normalised redacted query,
                                    -- so top queries group without text; kept when text is not stored
    topic_vector BLOB,              -- search/suggest: the query embedding as int8 (dim bytes, scale 1/127),
                                    -- for grouping content gaps into topics; NULL if not computed
    confidence REAL,                -- search/suggest: calibrated probability; NULL for lexical searches
    confident INTEGER,              -- 1 / 0 / NULL
    latency_ms REAL,                -- search/suggest: time to answer
    result_count INTEGER,           -- search/suggest: articles returned
    article_id TEXT,                -- actions: the article acted on
    position INTEGER,               -- actions: its 1-based position in the answer it came from
    helpful INTEGER                 -- feedback: 1 / 0
);
CREATE INDEX IF NOT EXISTS events_day_kind ON events(day, kind);
CREATE INDEX IF NOT EXISTS events_answer ON events(answer_id);
CREATE INDEX IF NOT EXISTS events_article ON events(article_id, kind);
-- The reports' covering index (search/reports.py): every column they filter or count on except the query text and
-- topic vector, so that aggregating a date range never reads the wide rows. On 1,000,000 synthetic events it took
-- the 90-day summary from 1.6-3.6 s to 0.8 s and top queries from 2.7 s to 1.1 s (docs/benchmarks.md); about 80 MB
-- more file and no measurable cost per written event.
CREATE INDEX IF NOT EXISTS events_report ON events(day, kind, language, source, product, confident, latency_ms,
                                                   result_count, answer_id, query_key, article_id, helpful);
CREATE TABLE IF NOT EXISTS results (   -- search/suggest: the articles returned, in order
    event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,      -- 1-based
    article_id TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (event_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_article ON results(article_id);

-- Daily rollups (kb/event_rollups.py): what the reports count, per closed UTC day (a day before the one they were
-- built on), so that a report over months reads thousands of rows instead of a million events. A day is rolled up
-- once it is closed and rolled up again when events of it, or actions on its answers, are written later; the reports
-- read the raw events of every day not rolled up (today, and days touched after the watermark). Retention deletes
-- them with the events. Counts only, except rollup_gaps, which keeps the redacted text (NULL when
-- KB_ANALYTICS_STORE_TEXT=false) and topic vector of each gap query's latest event of the day.
CREATE TABLE IF NOT EXISTS rollup_days (
    day TEXT PRIMARY KEY,           -- YYYY-MM-DD (UTC)
    last_id INTEGER NOT NULL,       -- its rollups count the events with id <= last_id
    regular INTEGER NOT NULL        -- 0: an action on one of its answers is dated before the answer (clock change):
                                    -- no rollups, the reports read this day's events
);
CREATE TABLE IF NOT EXISTS rollup_answers (    -- summary and self-service: answers per day, kind, source, language
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT,
    language TEXT,
    answers INTEGER NOT NULL,
    confident INTEGER NOT NULL,     -- confident = 1
    rated INTEGER NOT NULL,         -- confident not NULL
    no_results INTEGER NOT NULL,    -- result_count = 0
    used INTEGER NOT NULL           -- suggestions whose answer was inserted, linked or marked helpful
);
CREATE INDEX IF NOT EXISTS rollup_answers_day ON rollup_answers(day);
CREATE TABLE IF NOT EXISTS rollup_latency (    -- summary: every latency of the day, for exact percentiles
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    language TEXT,
    latencies BLOB NOT NULL         -- latency_ms values as little-endian float64
);
CREATE INDEX IF NOT EXISTS rollup_latency_day ON rollup_latency(day);
CREATE TABLE IF NOT EXISTS rollup_queries (    -- top queries: answers per query, day, language and first article
    query_key TEXT,
    day TEXT NOT NULL,
    language TEXT,
    first_article TEXT,             -- the article at position 1 (NULL: no results)
    answers INTEGER NOT NULL,
    rated INTEGER NOT NULL,
    not_confident INTEGER NOT NULL,
    last_id INTEGER NOT NULL        -- the latest event (its text is the query's)
);
CREATE INDEX IF NOT EXISTS rollup_queries_key ON rollup_queries(query_key, day, language, first_article, answers,
                                                                 rated, not_confident, last_id);
CREATE INDEX IF NOT EXISTS rollup_queries_day ON rollup_queries(day);
CREATE TABLE IF NOT EXISTS rollup_gaps (       -- content gaps: gap events per query (or event), day and language
    gap_key TEXT NOT NULL,          -- query_key, or 'event:<id>' for an event without one
    day TEXT NOT NULL,
    language TEXT,
    events INTEGER NOT NULL,
    not_confident INTEGER NOT NULL, -- confident = 0 or no result
    not_helpful INTEGER NOT NULL,   -- its answer marked not helpful
    last_id INTEGER NOT NULL,       -- the latest gap event of the day, whose text and vector follow
    query TEXT,
    topic_vector BLOB
);
CREATE INDEX IF NOT EXISTS rollup_gaps_day ON rollup_gaps(day);
CREATE TABLE IF NOT EXISTS rollup_shown (      -- article performance: results rows per day and article
    day TEXT NOT NULL,
    article_id TEXT NOT NULL,
    shown INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_shown_day ON rollup_shown(day);
CREATE TABLE IF NOT EXISTS rollup_actions (    -- article performance: actions per day, article, kind, helpful, product
    day TEXT NOT NULL,
    article_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    helpful INTEGER,
    product TEXT,
    actions INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_actions_day ON rollup_actions(day);
"""

# The same tables on PostgreSQL: BIGINT ids, BYTEA for BLOB, DOUBLE PRECISION for REAL (SQLite's REAL is 8 bytes),
# text compared byte by byte (COLLATE "C", as SQLite's BINARY: ISO dates and keys order and group the same). No
# foreign key from results to events: SQLite does not enforce it either (retention deletes both itself).
POSTGRES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id BIGINT PRIMARY KEY,
    at TEXT COLLATE "C" NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    answer_id TEXT COLLATE "C",
    language TEXT COLLATE "C",
    product TEXT COLLATE "C",
    query TEXT COLLATE "C",
    query_key TEXT COLLATE "C",
    topic_vector BYTEA,
    confidence DOUBLE PRECISION,
    confident INTEGER,
    latency_ms DOUBLE PRECISION,
    result_count INTEGER,
    article_id TEXT COLLATE "C",
    position INTEGER,
    helpful INTEGER
);
CREATE INDEX IF NOT EXISTS events_day_kind ON events(day, kind);
CREATE INDEX IF NOT EXISTS events_answer ON events(answer_id);
CREATE INDEX IF NOT EXISTS events_article ON events(article_id, kind);
CREATE INDEX IF NOT EXISTS events_report ON events(day, kind, language, source, product, confident, latency_ms,
                                                   result_count, answer_id, query_key, article_id, helpful);
CREATE TABLE IF NOT EXISTS results (
    event_id BIGINT NOT NULL,
    position INTEGER NOT NULL,
    article_id TEXT COLLATE "C" NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (event_id, position)
);
CREATE INDEX IF NOT EXISTS results_article ON results(article_id);
CREATE TABLE IF NOT EXISTS rollup_days (
    day TEXT COLLATE "C" PRIMARY KEY,
    last_id BIGINT NOT NULL,
    regular INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_answers (
    day TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C",
    language TEXT COLLATE "C",
    answers INTEGER NOT NULL,
    confident INTEGER NOT NULL,
    rated INTEGER NOT NULL,
    no_results INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_answers_day ON rollup_answers(day);
CREATE TABLE IF NOT EXISTS rollup_latency (
    day TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    language TEXT COLLATE "C",
    latencies BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_latency_day ON rollup_latency(day);
CREATE TABLE IF NOT EXISTS rollup_queries (
    query_key TEXT COLLATE "C",
    day TEXT COLLATE "C" NOT NULL,
    language TEXT COLLATE "C",
    first_article TEXT COLLATE "C",
    answers INTEGER NOT NULL,
    rated INTEGER NOT NULL,
    not_confident INTEGER NOT NULL,
    last_id BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_queries_key ON rollup_queries(query_key, day, language, first_article, answers,
                                                                 rated, not_confident, last_id);
CREATE INDEX IF NOT EXISTS rollup_queries_day ON rollup_queries(day);
CREATE TABLE IF NOT EXISTS rollup_gaps (
    gap_key TEXT COLLATE "C" NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    language TEXT COLLATE "C",
    events INTEGER NOT NULL,
    not_confident INTEGER NOT NULL,
    not_helpful INTEGER NOT NULL,
    last_id BIGINT NOT NULL,
    query TEXT COLLATE "C",
    topic_vector BYTEA
);
CREATE INDEX IF NOT EXISTS rollup_gaps_day ON rollup_gaps(day);
CREATE TABLE IF NOT EXISTS rollup_shown (
    day TEXT COLLATE "C" NOT NULL,
    article_id TEXT COLLATE "C" NOT NULL,
    shown INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_shown_day ON rollup_shown(day);
CREATE TABLE IF NOT EXISTS rollup_actions (
    day TEXT COLLATE "C" NOT NULL,
    article_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    helpful INTEGER,
    product TEXT COLLATE "C",
    actions INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_actions_day ON rollup_actions(day);
"""

# Version 1 is the schema from before versions (kb/migrations.py): files written before are adopted as they are.
MARK_VERSION = "INSERT INTO meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING"
# Version 2, PostgreSQL only (nothing changes on SQLite): the reports' covering index holds the event id too, as every
# SQLite index holds the rowid, so a product filter (`e.id IN product_answers`), a gap's latest event (max(id)) and
# the answers' id range are read from the index, not the wide rows; and results_first (each answer's first article)
# finds a product's answers without reading the whole results table. On 1,000,000 synthetic events the 30-day reports
# with a product filter took 0.9-2.3 s on PostgreSQL before (2.2-4.0x SQLite's), 0.3-1.2 s after (0.9-1.2x); the step
# rebuilds events_report, 4.7 s on that log (docs/benchmarks.md).
POSTGRES_V2 = """
DROP INDEX IF EXISTS events_report;
CREATE INDEX events_report ON events(day, kind, language, source, product, confident, latency_ms, result_count,
                                     answer_id, query_key, article_id, helpful) INCLUDE (id);
CREATE INDEX IF NOT EXISTS results_first ON results(article_id, event_id) WHERE position = 1;
"""
SCHEMA = Schema("analytics", ({"sqlite": f"{SQLITE};\n{MARK_VERSION}", "postgres": f"{POSTGRES};\n{MARK_VERSION}"},
                              {"sqlite": "", "postgres": POSTGRES_V2}))
