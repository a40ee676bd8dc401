"""What a large FAISS + SQLite version carries beside its files (ann.faiss, postings.npz), asked for by a writer."""
from __future__ import annotations


class Asking:
    """An index writer (kb.index.IndexWriter) whose `commit` asks `publish` for what a large version carries beside
    its files: `requests` (manifest key -> request, e.g. ann.REQUEST -> {"min_passages": n} from the backend's setting),
    carried in the manifest on the way in and never sealed."""

    def __init__(self, writer, requests: dict[str, dict]):
        self.writer, self.requests = writer, dict(requests)

    def __getattr__(self, name: str):
        return getattr(self.writer, name)

    def __enter__(self) -> Asking:
        return self

    def __exit__(self, *exc) -> None:
        self.writer.__exit__(*exc)

    def commit(self, manifest: dict):
        return self.writer.commit({**manifest, **self.requests})


def asking(writer, sizes: dict[str, int | None]):
    """`writer`, asking (manifest key -> size setting, e.g. {ann.REQUEST: 50_000}) for what versions of at least that many
    passages carry; a setting of None asks for nothing."""
    requests = {key: {"min_passages": int(n)} for key, n in sizes.items() if n is not None}
    return Asking(writer, requests) if requests else writer
