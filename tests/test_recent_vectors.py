"""kb/recent_vectors.py: query vectors computed lately are answered from memory, the rest encoded in one call."""
import numpy as np

from kb.recent_vectors import RecentVectors
from tests.conftest import TinyEncoder


class CountingEncoder(TinyEncoder):
    def __init__(self):
        super().__init__()
        self.batches: list[list[str]] = []

    def encode_queries(self, texts):
        self.batches.append(list(texts))
        return super().encode_queries(texts)


def test_known_texts_are_not_encoded_again_and_vectors_are_the_encoders():
    encoder = CountingEncoder()
    recent = RecentVectors(encoder)
    first = recent.encode_queries(["outlook password", "teams camera"])
    again = recent.encode_queries(["teams camera", "onedrive sync", "outlook password", "onedrive sync"])
    assert encoder.batches == [["outlook password", "teams camera"], ["onedrive sync"]]
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[0])
    assert np.array_equal(again, encoder.encode_queries(["teams camera", "onedrive sync", "outlook password",
                                                         "onedrive sync"]))
    assert again.dtype == np.float32 and again.shape == (4, 64)
    assert (recent.hits, recent.misses) == (2, 4)  # "onedrive sync" twice in one call: both computed, once


def test_least_recently_used_texts_are_forgotten_first():
    encoder = CountingEncoder()
    recent = RecentVectors(encoder, size=2)
    recent.encode_queries(["a"])
    recent.encode_queries(["b"])
    recent.encode_queries(["a"])  # a is now the most recent
    recent.encode_queries(["c"])  # b goes
    encoder.batches.clear()
    recent.encode_queries(["a", "b", "c"])
    assert encoder.batches == [["b"]]


def test_everything_else_is_the_encoders():
    encoder = TinyEncoder()
    recent = RecentVectors(encoder)
    assert recent.model_id == encoder.model_id and recent.dim == 64 and recent.multilingual is False
    recent.encode_passages(["x"])
    assert encoder.calls == 1
    assert recent.encode_queries([]).shape == (0, 64)


class BesideEncoder(CountingEncoder):
    def encode_queries_beside(self, texts):  # recorded as a batch starting with "beside"
        self.batches.append(["beside", *texts])
        return TinyEncoder.encode_queries(self, texts)


def test_work_beside_the_requests_shares_the_memory_and_encodes_with_the_encoders_own_session():
    encoder = BesideEncoder()
    recent = RecentVectors(encoder)
    asked = recent.encode_queries(["outlook password"])  # a request
    topics = recent.encode_queries_beside(["outlook password", "teams camera [email]"])  # the event log's writer
    assert encoder.batches == [["outlook password"], ["beside", "teams camera [email]"]]
    assert np.array_equal(topics[0], asked[0]) and (recent.hits, recent.misses) == (1, 2)
    plain = RecentVectors(CountingEncoder())  # an encoder without a session of its own: its encode_queries
    assert plain.encode_queries_beside(["x"]).shape == (1, 64) and plain.encoder.batches == [["x"]]
