"""Ticket text to search query: drop greetings, signatures, disclaimers, quoted history and log noise; keep codes."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from typing import Sequence

from kb.errors import BadRequest
from kb.ticket_text import _I, _INFO, _first_content, cut_signature, extract_codes, strip_greeting
from kb.ticket_text import code_spans, greeting_addressee, is_signature_name, signoff_end  # noqa: F401 - re-exported
from search.glossary import indonesian_vocabulary


@dataclass(frozen=True)
class TicketQuery:
    """What the retrieval arms get for one ticket."""

    text: str  # subject, then the most informative body sentences in original order; <= max_words words
    lexical: str  # subject + cleaned body + tags as plain words
    codes: tuple[str, ...]  # error codes and versions, de-duplicated, in order of appearance
    language: str  # "en" | "id"
    head: str = ""  # what the ticket is about in a line: its subject, else its first kept sentence


_HISTORY = re.compile(
    r"^(?:(?:on|pada)\b.{5,250}?\b(?:wrote|menulis)\s*:|-{2,}\s*(?:original message|pesan asli)\s*-{2,}|_{10,})$", _I)
_QUOTE_HEADER = re.compile(r"^\*?(?:from|dari)\s*:.+?\s\*?(?:sent|date|dikirim|tanggal)\s*:", _I)
_FORWARD = re.compile(r"^-{2,}\s*(?:forwarded message|pesan terusan)\s*-{2,}$", _I)
_HEADER = re.compile(
    r"^\*?(?:from|to|cc|bcc|subject|date|sent|reply-to|kepada|perihal|tanggal|dari|dikirim|subjek)\s*:\*?\s*\S", _I)
_DISCLAIMER = re.compile(
    r"^\W*(?:confidentiality notice|disclaimer\b|caution\s*:|external email|this (?:e-?mail|message)"
    r"(?: and any [^.]{0,40})? (?:is|are|may|contains?)\b.{0,80}(?:confidential|privileged|intended)"
    r"|the information (?:contained )?in this (?:e-?mail|message)|if you are not the intended"
    r"|(?:e-?mail|surel|pesan) ini (?:dan (?:seluruh )?lampiran\w* )?(?:\w+ ){0,2}rahasia"
    r"|informasi (?:yang )?(?:terkandung|terdapat) dalam|(?:jika|apabila) anda bukan penerima)", _I)
_LOG_LINE = re.compile(
    r"^\s*(?:\[?\d[\d/.-]{5,}[ T,]+\d{1,2}[:.]\d\d|\[?\d{1,2}:\d\d:\d\d|at [\w$<>`]+\.[\w$.<>`\[\]]+\s*\(|file \""
    r"|\.\.\. \d+ more|(?:0x)?[0-9a-f]{4,16}:?(?: [0-9a-f]{2}){4,}|\[?(?:trace|debug|info|warn|warning|error|fatal)"
    r"\]?[\s:]|traceback \(|caused by:|(?:[a-z_$][\w$]*\.){2,}\w*(?:exception|error)\b)", _I)
_LOG_KEEP = re.compile(r"error|fail|exception|denied|gagal|kesalahan|fatal", _I)
_TIMESTAMP = re.compile(r"^\[?\d+[-/.:]\d[\d/.:,+ -]*(?:T[\d:.,+-]+)?Z?\]?\s*")
_PRODUCT = re.compile(
    r"\b(?:outlook|teams|onedrive|sharepoint|exchange|excel|word|powerpoint|office|microsoft 365|windows|azure"
    r"|mfa|authenticator|vpn|printer|mailbox|calendar)\b", _I)
_PLEASANTRY = re.compile(
    r"\b(?:i hope (?:you|this|all)|hope you(?:'re| are)|(?:please|kindly) (?:help|advise|assist)|any help"
    r"|appreciate (?:your|any)|thank(?:s| you) in advance|let me know if you need|looking forward|sorry to bother"
    r"|have a (?:nice|great|good)|semoga|mohon (?:bantuan\w*|dibantu|arahan\w*|petunjuk\w*|solusi\w*|maaf)"
    r"|tolong dibantu|minta tolong|maaf (?:mengganggu|merepotkan)|terima ?kasih (?:sebelumnya|atas)|atas perhatian"
    r"|ditunggu (?:kabar|respon|balasan)\w*|salam kenal"
    r"|^(?:thanks|thank you|many thanks|cheers|regards|best regards|terima ?kasih|makasih|salam)\b[\s,!.]*(?:\w+[\s.]*){0,3}$)",
    _I)
_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|fw|fwd|aw|tr|balas|bls)\s*:|\s*\[[^\]]*\])+\s*", _I)
_WORD = re.compile(r"\w+(?:[.'’-]\w+)*")


_ID_WORDS = set(
    "yang dan tidak tak gak nggak ga enggak bisa saya aku kami kita anda di ke dari dengan untuk ini itu sudah udah "
    "belum tolong mohon apakah gimana bagaimana kenapa mengapa ada akan juga atau karena tapi pada saat ketika "
    "setelah sejak masih lagi sih dong kok padahal kalau kalo hanya telah sedang bapak ibu pak bu mau coba kirim "
    "buka masuk muncul tetap selalu semua dalam oleh seperti apa".split())
_EN_WORDS = set(
    "the a an is are was were be been to of in on for with and or but not can can't cannot could couldn't doesn't "
    "don't won't isn't i i'm my me we our you your its this that when after before since have has had do does did "
    "from at by as if so still please get any all also there what how why send open working keeps tried".split())


def detect_language(text: str) -> str:
    """"id" when Indonesian function words outnumber English ones; on a tie (short queries often have none),
    "id" when at least two words are Indonesian support vocabulary; else "en"."""
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("’", "'"))
    indonesian, english = sum(w in _ID_WORDS for w in words), sum(w in _EN_WORDS for w in words)
    if indonesian != english:
        return "id" if indonesian > english else "en"
    return "id" if sum(w in _id_vocabulary() for w in words) >= 2 else "en"


@lru_cache(maxsize=1)
def _id_vocabulary() -> frozenset[str]:
    return indonesian_vocabulary() - _EN_WORDS



def cut_history(lines: list[str]) -> list[str]:
    """Cut at the first reply/quote marker that follows real content; drop forward markers."""
    out: list[str] = []
    forwarded_at, first = -9, _first_content(lines)
    for i, line in enumerate(lines):
        heads = [" ".join(lines[i:i + n]) for n in (1, 2, 3)]
        marker = any(_HISTORY.match(h) for h in heads) or (
            i - forwarded_at > 2 and any(_QUOTE_HEADER.match(h) for h in heads[1:]))
        if line and marker and i > first:
            return out
        if _FORWARD.match(line):
            forwarded_at = i
        else:
            out.append(line)
    return out


def drop_disclaimers(lines: list[str]) -> list[str]:
    """Drop each paragraph from a line that starts a legal disclaimer."""
    out, skipping = [], False
    for line in lines:
        skipping = bool(line) and (skipping or bool(_DISCLAIMER.match(line)))
        if not skipping:
            out.append(line)
    return out


def reduce_logs(lines: list[str], min_run: int = 3, keep: int = 8) -> list[str]:
    """Shrink runs of log/stack-trace lines to the (de-timestamped) lines naming errors or codes."""
    out: list[str] = []
    for is_log, run in groupby(lines, key=lambda ln: bool(_LOG_LINE.match(ln))):
        run = list(run)
        if not is_log or len(run) < min_run:
            out += run
            continue
        kept = [_TIMESTAMP.sub("", ln) for ln in run if _LOG_KEEP.search(ln)
                or any(not re.fullmatch(r"[\d.]+", c) for c in extract_codes(ln))]
        out += list(dict.fromkeys(kept))[:keep]
    return out



def _clean(text: str, drop_quotes: bool) -> str:
    lines = []
    for line in re.split(r"\r\n?|\n", text):
        if line.lstrip().startswith(">"):
            if drop_quotes:
                continue
            line = re.sub(r"^(?:\s*>)+", "", line)
        lines.append(re.sub(r"[ \t\u00a0]+", " ", line).strip())
    lines = [ln for ln in reduce_logs(drop_disclaimers(cut_history(lines))) if not _HEADER.match(ln)]
    for k, line in enumerate(lines):
        if line and (stripped := strip_greeting(line)) is None:
            break
        if line:
            lines[k] = stripped
            if stripped:
                break
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(cut_signature(lines))).strip()
    return text if re.search(r"\w", text) else ""


def clean_ticket(text: str) -> str:
    """Ticket body without greetings, sign-offs, signatures, disclaimers, quoted history, headers and log noise."""
    return _clean(text, True) or _clean(text, False) or re.sub(r"[ \t]+", " ", text).strip()


def split_sentences(text: str, max_len: int = 40) -> list[str]:
    """Sentences of a cleaned body; hard-wrapped lines re-joined, runs over max_len words chunked."""
    units: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        current = ""
        for line in para.split("\n"):
            wrapped = len(current) >= 50 and not re.search(r"[.!?:;]$", current) and not _LOG_LINE.match(line)
            if current and (line[:1].islower() or wrapped) and not re.match(r"[-*•]|\d+[.)]\s", line):
                current += " " + line
            else:
                units.append(current)
                current = line
        units.append(current)
    sentences = []
    for sent in (s for u in units if u for s in re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", u)):
        words = sent.split()
        sentences += [" ".join(words[k:k + max_len]) for k in range(0, len(words), max_len)]
    return sentences


def score_sentence(sentence: str, index: int, codes: Sequence[str] | None = None) -> float:
    """Informativeness: codes, error words, products and early position score; pleasantries are -inf. `codes`: the
    sentence's extract_codes when the caller has them."""
    code = bool(extract_codes(sentence) if codes is None else codes)
    info, product = bool(_INFO.search(sentence)), bool(_PRODUCT.search(sentence))
    if _PLEASANTRY.search(sentence) and not (code or info or product):
        return float("-inf")
    return 3.0 * code + 2.0 * info + 1.5 * product + max(0.0, 1.5 - 0.5 * index) - 0.5 * (len(sentence.split()) < 4)


def normalise_language(language: str) -> str:
    lang = re.split(r"[-_]", language.strip().lower())[0]
    lang = "id" if lang == "in" else lang
    if not re.fullmatch(r"[a-z]{2,3}", lang):
        raise BadRequest(f"language {language!r} is not a language code such as 'en' or 'id'")
    return lang  # cleaning knows English and Indonesian; other languages are searched as they are


def build_query(subject: str = "", body: str = "", tags: Sequence[str] = (), language: str | None = None,
                max_words: int = 150) -> TicketQuery:
    """Query for both retrieval arms from a ticket's subject, body and tags."""
    subject = " ".join(_REPLY_PREFIX.sub("", subject or "").split())
    cleaned = clean_ticket(body or "")
    sentences = split_sentences(cleaned)
    found = [extract_codes(s) for s in sentences]
    scores = [score_sentence(s, k, found[k]) for k, s in enumerate(sentences)]
    has = [set(f) for f in found]
    codes = extract_codes(subject + "\n" + cleaned)
    in_subject = set(extract_codes(subject))
    head = subject.split()[:max(0, max_words - sum(len(c.split()) for c in codes if c not in in_subject))]

    def missing(chosen: set[int]) -> list[str]:
        return [c for c in codes if c not in in_subject.union(*(has[k] for k in chosen))]

    def length(chosen: set[int]) -> int:
        return len(head) + sum(len(sentences[k].split()) for k in chosen) + len(" ".join(missing(chosen)).split())

    chosen: set[int] = set()
    for k in sorted(range(len(sentences)), key=lambda k: (-scores[k], k)):
        if scores[k] > float("-inf") and length(chosen | {k}) <= max_words:
            chosen.add(k)
    lead = " ".join(head) + ("." if head and chosen and not re.search(r"[.!?:]$", head[-1]) else "")
    text = " ".join(" ".join([lead, *(sentences[k] for k in sorted(chosen)), *missing(chosen)]).split()[:max_words])
    kept = [s for s, sc in zip(sentences, scores) if sc > float("-inf")]
    lexical = " ".join(_WORD.findall(" ".join([subject, *kept, *tags])))
    lang = normalise_language(language) if language else detect_language(subject + "\n" + cleaned)
    return TicketQuery(text=text, lexical=lexical, codes=tuple(codes), language=lang,
                       head=subject or next(iter(kept), ""))
