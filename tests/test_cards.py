"""Result cards: lists as lists, a short lead around the marked sentences, the whole passage, escaping."""
import re
from html.parser import HTMLParser

from search.cards import LEAD_LINES, LINE_CHARS, parse_lines, passage_card
from search.snippets import mark_sentences

STEPS = ("Outlook keeps asking for the password when cached credentials are stale.\n\n"
         "To fix the issue, follow these steps:\n\n"
         "- Exit Outlook.\n"
         "- Open Credential Manager and remove the Office entries:\n"
         "  - MicrosoftOffice16_Data:SSPI\n"
         "  - MicrosoftOffice16_Data:ADAL\n"
         "- Start Outlook and sign in again.\n\n"
         "Symptoms\n"
         "A Windows Security dialog box appears every few minutes.")


class Tree(HTMLParser):
    """Checks that tags nest and collects (tag, text) of list items."""

    def __init__(self):
        super().__init__()
        self.stack, self.items, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag != "br":
            self.stack.append([tag, ""])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(tag)
            return
        _, text = self.stack.pop()
        if tag == "li":
            self.items.append(text.strip())
        if self.stack:
            self.stack[-1][1] += text

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][1] += data


def tree(fragment: str) -> Tree:
    parsed = Tree()
    parsed.feed(fragment)
    parsed.close()
    assert parsed.errors == [] and parsed.stack == [], fragment
    return parsed


def text_of(fragment: str) -> str:
    return re.sub(r"<[^>]+>", "", fragment)


def test_lists_are_lists_nested_and_not_run_together():
    card = passage_card(STEPS)
    assert "<ul><li>Exit Outlook.</li><li>Open Credential Manager" in card.full
    assert "<ul><li>MicrosoftOffice16_Data:SSPI</li><li>MicrosoftOffice16_Data:ADAL</li></ul>" in card.full
    items = tree(card.full).items
    assert "Exit Outlook." in items and "Start Outlook and sign in again." in items
    assert "- " not in text_of(card.full)  # no list marker left in the text


def test_paragraphs_headings_and_continuations():
    text = ("- Locate the following registry subkey:\n  HKEY_CURRENT_USER\\Software\\Microsoft\\Office\n"
            "- Exit Registry Editor.\n\nCause\nThe profile is damaged.")
    lines = parse_lines(text)
    assert [line.kind for line in lines] == ["item", "more", "item", "heading", "text"]
    full = passage_card(text).full
    assert "<li>Locate the following registry subkey:<br>HKEY_CURRENT_USER" in full  # the key stays in its item
    assert '<p class="passage-heading">Cause</p><p>The profile is damaged.</p>' in full


def test_lead_is_around_the_marked_sentence_and_short():
    snippet = mark_sentences(STEPS, "windows security dialog box every few minutes")
    card = passage_card(snippet.text, snippet.highlights)
    assert "<mark>A Windows Security dialog box appears every few minutes.</mark>" in card.lead
    assert "Symptoms" not in card.lead  # a heading is no lead while other text exists
    assert "Start Outlook" not in card.lead  # nor is the sub-section above it
    assert len(text_of(card.lead)) <= LEAD_LINES * LINE_CHARS
    assert card.more and "Exit Outlook." in card.full and "<mark>" in card.full


def test_a_marked_list_item_comes_with_its_introduction():
    snippet = mark_sentences(STEPS, "exit outlook", limit=1)
    card = passage_card(snippet.text, snippet.highlights)
    assert "To fix the issue, follow these steps:" in card.lead
    assert "<ul><li><mark>Exit Outlook.</mark></li>" in card.lead
    tree(card.lead)


def test_without_marks_the_lead_is_the_top_of_the_passage():
    card = passage_card(STEPS)
    assert text_of(card.lead).startswith("Outlook keeps asking for the password")
    assert card.more


def test_left_out_sentences_show_an_ellipsis():
    text = ("Outlook stores mail in an OST file. The file can grow large over the years. Sync slows down as it grows. "
            "When the file is damaged, send/receive fails with error 0x8004010F. Rebuild the OST to fix it. "
            "Outlook recreates the file the next time it starts. The first sync can take a long time. "
            "Keep Outlook open until it finishes. Large mailboxes may take several hours to download again.")
    snippet = mark_sentences(text, "send receive error", ("0x8004010F",), limit=1)
    lead = passage_card(snippet.text, snippet.highlights).lead
    assert lead.startswith("<p>… ") and "<mark>When the file is damaged" in lead and lead.endswith(" …</p>")


def test_a_very_long_sentence_is_cut_at_a_word():
    text = "Word " * 400 + "end."
    lead = passage_card(text).lead
    assert len(text_of(lead)) <= LEAD_LINES * LINE_CHARS + 2 and text_of(lead).endswith(" …")


def test_short_passage_has_nothing_more():
    card = passage_card("Restart Teams.")
    assert card.lead == card.full == "<p>Restart Teams.</p>" and not card.more
    assert passage_card("").lead == "" and not passage_card("   \n").more


def test_text_is_escaped_and_marks_stay_inside_lines():
    text = "<script>alert(1)</script> breaks the page.\n- Use <b>bold</b> & more."
    card = passage_card(text, [(0, len(text))])
    assert "<script>" not in card.full and "<b>" not in card.full
    assert "&lt;script&gt;" in card.lead and "&amp; more" in card.full
    assert "<li><mark>Use &lt;b&gt;bold&lt;/b&gt; &amp; more.</mark></li>" in card.full
    tree(card.full)


def test_a_short_introduction_on_its_own_line_is_kept():
    text = "Outlook is slow.\n\nFollow these steps:\n- Delete the OST file.\n- Start Outlook.\n- Wait for the sync."
    snippet = mark_sentences(text, "delete ost file", limit=1)
    lead = passage_card(snippet.text, snippet.highlights).lead
    assert lead == "<p>Follow these steps:</p><ul><li><mark>Delete the OST file.</mark></li><li>Start Outlook.</li></ul>"
