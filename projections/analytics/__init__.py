"""The tenant analytics read model: the projection (:mod:`.projection`) and its queries
(:mod:`.queries`); ``from projections import analytics`` is the whole interface."""

from projections.analytics.projection import COLLECTIONS, NAME, author_key, author_of, project
from projections.analytics.queries import (
    GRANULARITIES,
    MAX_DAYS,
    MAX_DOCS,
    MAX_MONTHS,
    QUIET,
    REPLY_WINDOW,
    TOP_CHANNELS,
    AnalyticsRange,
    Conversation,
    Figures,
    Granularity,
    Report,
    TooManyDocuments,
    analytics_report,
    conversations,
    parse_range,
)

__all__ = [
    "COLLECTIONS",
    "GRANULARITIES",
    "MAX_DAYS",
    "MAX_DOCS",
    "MAX_MONTHS",
    "NAME",
    "QUIET",
    "REPLY_WINDOW",
    "TOP_CHANNELS",
    "AnalyticsRange",
    "Conversation",
    "Figures",
    "Granularity",
    "Report",
    "TooManyDocuments",
    "analytics_report",
    "author_key",
    "author_of",
    "conversations",
    "parse_range",
    "project",
]
