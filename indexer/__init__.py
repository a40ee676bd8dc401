"""Indexer: Markdown articles -> passages -> a versioned index on disk."""
