"""Response models of the analytics API (/api/analytics/*): the reports' JSON contract in the OpenAPI document."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Share = float | None  # a fraction 0..1 rounded to 4 places; null when there was nothing to divide by


class ReportFiltersOut(BaseModel):
    since: str = Field(description="First day covered, YYYY-MM-DD (UTC).")
    until: str = Field(description="Last day covered, inclusive.")
    language: str | None = Field(description="Only queries in this language; null: all.")
    product: str | None = Field(description="Only answers about this product (a search filtered to it, or whose first "
                                            "result is one of its articles); in the article report its articles.")
    days: int


# ---- summary ------------------------------------------------------------------------------------
class Totals(BaseModel):
    answers: int = Field(description="Searches plus suggestions.")
    searches: int
    suggestions: int
    no_results: int = Field(description="Answers that listed no article.")
    confident: int = Field(description="Answers with a confident best result.")
    rated: int = Field(description="Answers with a confidence at all (lexical searches have none).")
    confident_share: Share = Field(description="confident / rated.")


class Latency(BaseModel):
    p50: float | None = Field(description="Median milliseconds to answer (nearest rank).")
    p95: float | None
    count: int


class LatencyByKind(BaseModel):
    search: Latency
    suggest: Latency
    all: Latency


class VolumePeriod(BaseModel):
    period: str = Field(description="First day of the period within the range: a day, or a Monday-to-Sunday week "
                                    "(granularity week) clipped to the range.")
    days: int = Field(description="Days of the range in this period (a clipped week has fewer than 7).")
    searches: int
    suggestions: int
    confident_share: Share


class SourceVolume(BaseModel):
    source: str = Field(description="page, widget, api:<key name>, webhook:<helpdesk>, cli; unknown when missing.")
    searches: int
    suggestions: int
    total: int


class LanguageVolume(BaseModel):
    language: str = Field(description="Language of the query (en, id, ...); unknown when missing.")
    searches: int
    suggestions: int
    total: int


class SelfServiceWeek(BaseModel):
    week: str = Field(description="Monday of the week, or the range's first day for a first, clipped week.")
    days: int
    suggestions: int
    used: int
    share: Share


class SelfServiceSource(BaseModel):
    source: str
    suggestions: int
    used: int
    share: Share


class SelfServiceLanguage(BaseModel):
    language: str
    suggestions: int
    used: int
    share: Share


class SelfService(BaseModel):
    """Suggestions whose answer an agent used: an article inserted into the reply, linked to the ticket, or marked
    helpful (on any day from `since`)."""

    suggestions: int
    used: int
    share: Share
    weeks: list[SelfServiceWeek]
    sources: list[SelfServiceSource]
    languages: list[SelfServiceLanguage]


class SummaryResponse(BaseModel):
    filters: ReportFiltersOut
    granularity: Literal["day", "week"] = Field(description="week when the range is longer than 60 days.")
    totals: Totals
    latency_ms: LatencyByKind
    volume: list[VolumePeriod] = Field(description="Every period of the range, empty ones included.")
    sources: list[SourceVolume] = Field(description="Most answers first.")
    languages: list[LanguageVolume] = Field(description="Most answers first.")
    self_service: SelfService
    notes: list[str]


# ---- top queries --------------------------------------------------------------------------------
class TopArticle(BaseModel):
    id: str
    title: str = Field(description="From the index in service; the id when the article is no longer in it.")
    count: int = Field(description="How often it came first for this query.")


class QueryRow(BaseModel):
    query_key: str = Field(description="sha256 (16 hex characters) of the normalised redacted query.")
    query: str | None = Field(description="The redacted query; null when text is not stored "
                                          "(KB_ANALYTICS_STORE_TEXT=false).")
    count: int
    not_confident: int
    not_confident_share: Share
    top_article: TopArticle | None = Field(description="The article most often first in its answers.")


class QueriesResponse(BaseModel):
    filters: ReportFiltersOut
    answers: int = Field(description="Searches and suggestions in the filters.")
    distinct_queries: int
    queries: list[QueryRow] = Field(description="Most asked first.")
    notes: list[str]


# ---- content gaps -------------------------------------------------------------------------------
class NearestArticle(BaseModel):
    id: str
    title: str
    cosine: float = Field(description="Cosine of the topic's centroid to the article's mean passage vector.")


class GapTopic(BaseModel):
    rank: int
    size: int = Field(description="Gap events in the topic.")
    queries: int = Field(description="Distinct queries in it.")
    not_confident: int
    not_helpful: int = Field(description="Events whose answer was marked not helpful (may also be not confident).")
    first_half: int
    second_half: int
    trend: Literal["new", "rising", "falling", "steady"] = Field(
        description="Daily rate of the second half of the range against the first: +25% or more rising, -25% or "
                    "less falling; new when the first half had none.")
    change: float | None = Field(description="Relative change of the daily rate; null for new topics.")
    examples: list[str] = Field(description="Up to 3 redacted queries, most asked first; empty without stored text.")
    nearest_article: NearestArticle | None = Field(description="null without an index or with another model's "
                                                               "vectors.")
    not_covered: str | None = Field(None, description="The other vendor's product its examples are about that no "
                                    "article mentions (a Zoom question on a Microsoft 365 knowledge base): write about "
                                    "it, or route such tickets; null otherwise, and without stored text.")


class GapsResponse(BaseModel):
    filters: ReportFiltersOut
    gap_events: int = Field(description="Searches and suggestions not confident, without results, or answered not "
                                        "helpful.")
    not_confident: int
    not_helpful: int
    grouped: int = Field(description="Gap events in a topic.")
    ungrouped: int = Field(description="Gap events in no topic: asked once and like nothing else, or without a "
                                       "topic vector.")
    topic_count: int
    threshold: float = Field(description="Cosine to a topic's seed query needed to join it (per model).")
    halves: list[str] = Field(description="First day of each half of the range, for the trend.")
    grouped_share: Share
    topics: list[GapTopic] = Field(description="Most gap events first: what to write next.")
    notes: list[str]


# ---- article performance ------------------------------------------------------------------------
class ArticleCounts(BaseModel):
    shown: int = Field(description="Searches and suggestions that listed it.")
    opened: int
    copied: int
    inserted: int = Field(description="Inserted into a reply (widget).")
    linked: int = Field(description="Linked to a ticket.")
    helpful: int
    not_helpful: int
    helpful_rate: Share


class ArticleRow(ArticleCounts):
    id: str
    title: str
    product: str
    owner: str
    reviewed: str = Field(description="YYYY-MM-DD; empty when unknown.")
    in_index: bool = Field(description="False for articles no longer in the index in service.")
    flags: list[Literal["popular_stale", "never_opened", "low_helpful"]]


class OwnerRow(ArticleCounts):
    owner: str
    articles: int


class ProductRow(ArticleCounts):
    product: str
    articles: int


class FlagCounts(BaseModel):
    popular_stale: int = Field(description="Shown at least popular_min_shown times, reviewed more than stale_days "
                                           "ago or never.")
    never_opened: int = Field(description="Shown at least 20 times, never opened.")
    low_helpful: int = Field(description="At least 5 yes/no answers, under half of them yes.")


class ArticlesResponse(BaseModel):
    filters: ReportFiltersOut
    stale_days: int = Field(description="KB_STALE_DAYS.")
    today: str
    popular_min_shown: float = Field(description="Shown this often counts as popular: 20, or the 80th percentile "
                                                 "of shown counts when higher.")
    total_articles: int = Field(description="Articles shown or acted on in the filters.")
    flag_counts: FlagCounts
    articles: list[ArticleRow] = Field(description="Most shown first, at most `limit`.")
    flagged: list[ArticleRow] = Field(description="Every flagged article.")
    owners: list[OwnerRow]
    products: list[ProductRow]
    notes: list[str]
