"""Boilerplate in passages (KB numbers, Applies-to lines, registry warnings, disclaimers, TOCs): never a snippet."""
from __future__ import annotations

import re

# A callout label or list marker in front of a line or sentence: "Important: ", "- Note ", "[!WARNING] ".
LABEL = re.compile(r"^\s*(?:-\s+)?(?:\[\s*!\s*\w+\s*\]\s*)?"
                   r"(?:(?:note|notes|important|warning|caution|tip|catatan|penting|peringatan)\b:?\s*)?", re.I)

# The heading of a table of contents; the list under it is boilerplate too.
TOC_HEADING = re.compile(r"(?:in this article|table of contents|contents|dalam artikel ini)\W*$", re.I)

# Whole lines that carry nothing an agent needs (checked from the line's start, after its label).
LINES = re.compile("|".join([
    TOC_HEADING.pattern,
    r"original (?:kb|product) (?:number|version)\b",
    r"(?:this article )?applies to:",
    r"still need help\?",
    r"back to top\W*$",
    r"did this (?:solve|fix|resolve) (?:your|the) (?:problem|issue)\W*$",
    r"third-party (?:information|contact) disclaimer\W*$",
]), re.I)

# Sentences of the usual warnings and disclaimers (checked from the sentence's start, after its label).
SENTENCES = re.compile("|".join([
    # registry warnings, in their many wordings
    r"follow the steps in this (?:section|article|method|procedure|task) carefully",
    r"(?:however, )?serious problems (?:might|may|can|could) occur if you (?:incorrectly )?(?:modify|change|edit|use)",
    r"before you (?:modify|change) (?:it|the registry), (?:back up|make sure)",
    r"(?:for (?:added )?protection, )?back up the registry (?:before|for restoration)",
    r"this (?:section|article|method|task)(?:, method, or task)? contains (?:steps|information) "
    r"(?:that tell you )?(?:about )?(?:how to )?(?:modify|modifying|change|changing|edit|editing) the registry",
    r"therefore, make sure (?:that )?you follow these steps carefully",
    r"then,? you can restore the registry if a problem occurs",
    r"for more info(?:rmation)? about how to back up and restore the registry",
    r"make sure (?:that you|to) (?:back up the registry|know how to restore the registry)",
    r"these problems (?:might|may|could) (?:require|cause) ",
    r"microsoft (?:cannot|can't) guarantee that (?:these |the )?problems",
    r"(?:modify|use|edit) (?:the registry|registry editor) at your own risk",
    # disclaimers
    r"the third-party products that this article discusses are manufactured by",
    r"microsoft makes no warranty, implied or otherwise",
    r"microsoft provides third-party contact information",
    r"this contact information may change without notice",
    r"microsoft (?:does not|doesn't) guarantee the accuracy of (?:this )?third-party",
    r"microsoft provides programming examples for illustration only",
    r"this includes, but (?:is not|isn't) limited to, the implied warranties",
    r"this article assumes that (?:you are|you're) familiar with the programming language",
    r"microsoft support (?:engineers|professionals) can help explain the functionality",
    r"however, they will not modify these examples",
    # status and applies-to statements
    r"microsoft has confirmed that this is a (?:problem|bug) in the microsoft products",
    r"microsoft is (?:researching|working to resolve) this problem and will post more information",
    r"(?:this|the information in this) article applies to ",
    r"requires (?:basic|expert|advanced) (?:macro|knowledge)",
    # banners repeated across whole sets of articles
    r"the hybrid configuration wizard (?:\(hcw\) )?that's included in the exchange management console",
    r"azure ad and msonline powershell modules are deprecated",
    r"we recommend migrating to microsoft graph powershell",
]), re.I)

# Sentences that go on from a boilerplate sentence on the same line ("Still need help? Go to ...", the rest of a
# registry warning or of a deprecation banner); a sentence after boilerplate is boilerplate only if it matches.
CONTINUATIONS = re.compile("|".join([
    r"go to (?:the )?microsoft", r"\d{5,7}\b", r"(?:novice|moderate|advanced)\W*$", r"requires (?:basic )?knowledge",
    r"(?:therefore|instead|after this date|to learn more|for common migration|the deprecated modules|versions? [\d.x]+)",
    r"for more info(?:rmation)?(?: about how to back up)?,? (?:see|click|select)",
    r"it does not apply to", r"microsoft support (?:engineers|professionals)", r"however, they (?:will not|won't)",
    r".*\b(?:guarantee|warrant|msonline|deprecat|hybrid configuration wizard)",
    r".*\b(?:back ?up|restore|incorrectly|at your own risk)\b.*\bregistry", r".*\bregistry\b.*\b(?:back ?up|restore|risk)",
]), re.I)

LIST_LINE = re.compile(r"^\s*- ")


def unlabelled(text: str) -> str:
    """`text` without a leading list marker or callout label."""
    return text[LABEL.match(text).end():]


def is_boilerplate(sentence: str) -> bool:
    """Whether a sentence (or a whole line) is one of the usual warnings, disclaimers or metadata lines."""
    rest = unlabelled(sentence.strip())
    return bool(rest) and bool(LINES.match(rest) or SENTENCES.match(rest))


def line_of(text: str, start: int) -> tuple[int, int]:
    """[start, end) of the line holding offset `start`."""
    end = text.find("\n", start)
    return text.rfind("\n", 0, start) + 1, len(text) if end < 0 else end


def boilerplate_flags(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """Which sentence spans of `text` (from `split_sentences`, which never crosses a line) are boilerplate.

    A sentence is boilerplate when its line is (LINES: "Original KB number: ...", "Applies to: ..."), when it is
    one of the usual warnings or disclaimers, when it goes on from one on the same line (CONTINUATIONS), when it
    is only the label of a boilerplate line ("Important:"), or when it is an item of the list under an
    "In this article" line (a table of contents).
    """
    flags: list[bool] = []
    toc, last_line = False, None
    for i, (start, end) in enumerate(spans):
        line_start, line_end = line_of(text, start)
        sentence = text[start:end]
        if line_start != last_line:
            previous = text[:line_start].rstrip("\n").rsplit("\n", 1)[-1] if line_start else ""
            is_item = bool(LIST_LINE.match(text[line_start:line_end]))
            toc = is_item and (toc or bool(TOC_HEADING.match(previous.strip())))
            metadata = bool(LINES.match(unlabelled(text[line_start:line_end].strip())))
            after_boilerplate = False
        flag = toc or metadata or is_boilerplate(sentence) or \
            (after_boilerplate and bool(CONTINUATIONS.match(sentence.strip())))
        if not flag and not unlabelled(sentence.strip()):  # a bare label: as the rest of its line
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            flag = nxt is not None and nxt[0] < line_end and is_boilerplate(text[nxt[0]:nxt[1]])
        flags.append(flag)
        after_boilerplate, last_line = flag, line_start
    return flags
