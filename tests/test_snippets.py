"""Snippets: sentence splitting and marking of the sentences that match the query."""
from kb.sentences import split_sentences
from search.snippets import Snippet, mark_sentences

TEXT = ("Outlook stores mail in an OST file. When the file is damaged, send/receive fails with error 0x8004010F. "
        "Rebuild the OST to fix it.\n- Close Outlook\n- Delete the OST file")


def spans_text(snippet):
    return [snippet.text[s:e] for s, e in snippet.highlights]


def test_split_sentences_and_list_lines():
    sentences = [TEXT[s:e] for s, e in split_sentences(TEXT)]
    assert sentences[0] == "Outlook stores mail in an OST file."
    assert "- Close Outlook" in sentences and len(sentences) == 5


def test_marks_sentence_with_the_code():
    marked = spans_text(mark_sentences(TEXT, "sync error", ("0x8004010F",), limit=1))
    assert marked == ["When the file is damaged, send/receive fails with error 0x8004010F."]


def test_marks_best_overlap_sentences():
    marked = spans_text(mark_sentences(TEXT, "how to rebuild a damaged OST file", (), limit=2))
    assert "Rebuild the OST to fix it." in marked


def test_no_overlap_marks_nothing():
    assert mark_sentences(TEXT, "printer toner", ()).highlights == ()


def test_html_is_escaped_around_marks():
    snippet = Snippet("<b>x</b> fails. ok", ((0, 15),))
    assert snippet.to_html() == "<mark>&lt;b&gt;x&lt;/b&gt; fails.</mark> ok"


def test_code_must_match_whole_tokens():
    text = "Error 550 5.1.10 means the recipient was not found. Error 550 5.1.1 means a bad address."
    marked = spans_text(mark_sentences(text, "bounce", ("550 5.1.1",), limit=1))
    assert marked == ["Error 550 5.1.1 means a bad address."]


def test_boilerplate_is_never_marked():
    text = ("Original KB number: 2734925\n\n"
            "Important: Follow the steps in this section carefully. Serious problems might occur if you modify the "
            "registry incorrectly. Before you modify it, back up the registry for restoration in case problems occur."
            "\n\n- Open Registry Editor.\n- Set the EnableADAL registry value to 1.")
    marked = spans_text(mark_sentences(text, "modify registry 2734925 problems", ("2734925",), limit=3))
    assert marked == ["- Open Registry Editor.", "- Set the EnableADAL registry value to 1."]



def test_query_stems_and_code_phrases_are_what_marking_matches():
    from search.snippets import code_phrases, query_stems

    assert query_stems("Syncing the files, syncing again") == {"sync", "file"}  # stop words dropped, suffixes folded
    assert code_phrases(("550 5.1.1", "0x8004010F")) == ("550 5 1 1", "0x8004010f")


def test_codes_given_as_a_list_mark_as_a_tuple_does():
    as_list = mark_sentences(TEXT, "sync error", ["0x8004010F"], limit=1)
    assert as_list == mark_sentences(TEXT, "sync error", ("0x8004010F",), limit=1)
    assert spans_text(as_list) == ["When the file is damaged, send/receive fails with error 0x8004010F."]


def test_stored_spans_mark_what_finding_them_marks():
    """The index stores each passage's markable sentences (kb.sentences.markable); marking with them gives the same
    highlights as finding them again, and only the given spans can be marked."""
    from kb.sentences import markable

    boiler = ("Original KB number: 2734925\n\nImportant: Follow the steps in this section carefully. Open the "
              "registry.\n- Set the EnableADAL registry value to 1.")
    for text, query, codes in ((TEXT, "how to rebuild a damaged OST file", ()), (TEXT, "sync", ("0x8004010F",)),
                               (boiler, "registry 2734925 value", ("2734925",))):
        spans = markable(text)
        assert spans
        assert mark_sentences(text, query, codes, spans=spans) == mark_sentences(text, query, codes)
    only_last = markable(TEXT)[-1:]
    assert spans_text(mark_sentences(TEXT, "rebuild OST file outlook", (), limit=3, spans=only_last)) == \
        ["- Delete the OST file"]
    assert [boiler[s:e] for s, e in markable(boiler)] == ["Open the registry.", "- Set the EnableADAL registry value to 1."]
