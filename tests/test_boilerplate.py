"""Boilerplate lines (KB numbers, Applies-to lists, registry warnings, disclaimers, TOCs) are never the snippet."""
import re

import pytest

from kb.boilerplate import boilerplate_flags
from kb.sentences import split_sentences
from search.cards import passage_card
from search.snippets import mark_sentences

# Lines as they stand in md-office-support-kb and content/ (grep "Original KB number": 800+ articles).
BOILERPLATE = [
    "Original KB number: 2734925",
    "Original product version: Microsoft Office Access 2003, Microsoft Office Access 2007, Access 2010",
    "Applies to: Outlook 2016, Outlook 2019, Outlook for Microsoft 365",
    "Important: Follow the steps in this section carefully. Serious problems might occur if you modify the registry "
    "incorrectly. Before you modify it, back up the registry for restoration in case problems occur.",
    "Important: This section, method, or task contains steps that tell you how to modify the registry. However, "
    "serious problems might occur if you modify the registry incorrectly. Therefore, make sure that you follow these "
    "steps carefully. For added protection, back up the registry before you modify it. Then, you can restore the "
    "registry if a problem occurs. For more information about how to back up and restore the registry, see How to "
    "back up and restore the registry in Windows.",
    "Warning: Serious problems might occur if you modify the registry incorrectly by using Registry Editor or by "
    "using another method. These problems might require that you reinstall the operating system. Microsoft cannot "
    "guarantee that these problems can be solved. Modify the registry at your own risk.",
    "Still need help? Go to Microsoft Community.",
    "Back to top",
    "Did this solve your problem?",
    "Third-party information disclaimer",
    "The third-party products that this article discusses are manufactured by companies that are independent of "
    "Microsoft. Microsoft makes no warranty, implied or otherwise, about the performance or reliability of these "
    "products.",
    "Microsoft provides third-party contact information to help you find technical support. This contact "
    "information may change without notice. Microsoft does not guarantee the accuracy of this third-party contact "
    "information.",
    "Microsoft provides programming examples for illustration only, without warranty either expressed or implied. "
    "This includes, but is not limited to, the implied warranties of merchantability or fitness for a particular "
    "purpose.",
    'Microsoft has confirmed that this is a problem in the Microsoft products that are listed in the "Applies to" '
    "section.",
    "Note: Azure AD and MSOnline PowerShell modules are deprecated as of March 30, 2024. To learn more, read the "
    "deprecation update.",
    "In this article",
]

# Lines that look a little like boilerplate but are what an agent needs.
CONTENT = [
    "This article describes how to reset the Outlook registry key that forces Modern Authentication.",
    "To fix the issue, follow these steps:",
    "Back up the OST file before you delete it, and then restart Outlook.",
    "Create the following registry key to force Outlook to use a newer authentication method.",
    "Note: If the PolicyNudges subkey doesn't exist, create it.",
    "If the problem isn't fixed, contact support.",
]

STEPS = "To stop the prompts, set the EnableADAL registry value to 1 and then restart Outlook."


def passage(line: str) -> str:
    return f"{line}\n\n{STEPS}\n\n- Open Registry Editor.\n- Restart Outlook."


def words_of(line: str) -> str:
    return " ".join(re.findall(r"[A-Za-z]{4,}", line))


@pytest.mark.parametrize("line", BOILERPLATE)
def test_boilerplate_is_flagged_sentence_by_sentence(line):
    text = passage(line)
    spans = split_sentences(text)
    flags = dict(zip((text[s:e] for s, e in spans), boilerplate_flags(text, spans)))
    first_line = [sentence for sentence in flags if sentence in line]
    assert first_line and all(flags[sentence] for sentence in first_line)
    assert not flags[STEPS]


@pytest.mark.parametrize("line", BOILERPLATE)
def test_boilerplate_is_never_the_lead_or_marked(line):
    text = passage(line)
    snippet = mark_sentences(text, words_of(line) + " registry outlook")  # the query even shares its words
    assert all(line.find(snippet.text[s:e]) < 0 for s, e in snippet.highlights)
    card = passage_card(snippet.text, snippet.highlights)
    lead = re.sub(r"<[^>]+>", "", card.lead)
    assert "EnableADAL" in lead
    assert not any(piece in lead for piece in re.split(r"(?<=[.?:])\s+", line) if len(piece) > 12)
    assert card.more and "Original" not in lead and "Serious problems" not in lead


@pytest.mark.parametrize("line", CONTENT)
def test_content_is_not_boilerplate(line):
    text = passage(line)
    spans = split_sentences(text)
    assert not any(boilerplate_flags(text, spans))


def test_a_table_of_contents_is_boilerplate_up_to_its_end():
    text = "In this article\n\n- Symptoms\n- Cause\n- Resolution\n\nOutlook asks for the password again and again."
    spans = split_sentences(text)
    flags = boilerplate_flags(text, spans)
    assert flags == [True, True, True, True, False]
    assert re.sub(r"<[^>]+>", "", passage_card(text).lead) == "Outlook asks for the password again and again."


def test_a_warning_with_steps_on_the_same_line_keeps_the_steps():
    text = ("Microsoft provides programming examples for illustration only, without warranty either expressed or "
            "implied. To insert rows on several sheets, use a For Each...Next loop.")
    spans = split_sentences(text)
    assert boilerplate_flags(text, spans) == [True, False]


def test_only_boilerplate_is_still_shown():
    text = "Original KB number: 2734925\n\nStill need help? Go to Microsoft Community."
    assert "Original KB number" in passage_card(text).lead
