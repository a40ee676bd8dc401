"""KB Search shared core: settings, errors, article model, embedder and index store."""
