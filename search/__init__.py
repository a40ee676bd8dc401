"""Search service: query cleaning, retrieval, fusion and the HTTP API."""
