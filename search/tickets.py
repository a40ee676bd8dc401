"""Ticket text to search query: drop greetings, signatures, disclaimers, quoted history and log noise; keep codes."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from typing import Sequence

from kb.errors import BadRequest
from search.glossary import indonesian_vocabulary


@dataclass(frozen=True)
class TicketQuery:
    """What the retrieval arms get for one ticket."""

    text: str  # subject, then the most informative body sentences in original order; <= max_words words
    lexical: str  # subject + cleaned body + tags as plain words
    codes: tuple[str, ...]  # error codes and versions, de-duplicated, in order of appearance
    language: str  # "en" | "id"


_I = re.I
_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|greetings|good (?:morning|afternoon|evening|day)|halo|hallo|hai|salam(?: sejahtera)?"
    r"|assalamu\W?alaikum(?: wr\.? ?wb\.?)?|selamat (?:pagi|siang|sore|malam)|kepada yth|yth|dengan hormat)"
    r"\b\.?(?P<rest>.*)$", _I)
_ADDRESSEE = re.compile(
    r"^(?:[A-Z][\w.'-]*|team|all|there|everyone|support|sir|madam|guys|it|pak|bu|bapak|ibu|tim|kak|mas|mbak"
    r"|rekan|helpdesk|admin|semua)$")
_SIGNOFF = re.compile(
    r"^(?:many thanks|thanks(?: again| in advance| a lot)?|thank you(?: very much| in advance)?|thx|cheers"
    r"|(?:best|kind|warm)? ?regards|best wishes|(?:yours )?sincerely|best(?=\s*,?\s*$)|terima ?kasih(?: banyak)?"
    r"|makasih|trims|salam(?: hangat)?|hormat (?:saya|kami)|wassalam\w*|sent from [\w ]+|get outlook for \w+"
    r"|dikirim dari [\w ]+)\b[\s,.!:-]*", _I)
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
_PHONE = re.compile(r"^(?:[a-z]{1,9}\.?\s*[:.]?\s*)?\+?\(?\d[\d\s().-]{7,}\d(?:\s*(?:ext|x)\.?\s*\d+)?$", _I)
_STRONG_SIG = re.compile(
    r"^(?:e-?mail\s*:\s*)?\S+@\S+\.\w+$|^(?:web\w*\s*:\s*)?(?:https?://|www\.)\S+$|\b(?:PT|CV|Tbk|Ltd|Inc|LLC|GmbH"
    r"|Corp)\b|\b(?:manager|engineer|director|officer|administrator|specialist|analyst|consultant|coordinator"
    r"|supervisor|assistant|head of|staff?|kepala|direktur|manajer|divisi|departe?ment|bagian)\b"
    r"|^(?:jl\.|jalan|gedung|lantai|floor)\s|\s\|\s", _I)
_NAME = re.compile(r"^[A-Z][\w'-]*\.?(?:\s+[A-Z][\w'-]*\.?){0,3},?$")
_INFO = re.compile(
    r"\b(?:errors?|fail\w*|exception|denied|cannot|can't|unable|won't|doesn't|not (?:working|responding|syncing)"
    r"|crash\w*|stuck|freez\w*|hang\w*|blocked|missing|gagal|kesalahan|galat|(?:tidak|gak|nggak|ga) (?:bisa|dapat)"
    r"|macet|hilang)\b", _I)
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

_CODE_PATTERNS = [  # (pattern, normaliser), highest priority first; "" from a normaliser means "not a code"
    (re.compile(r"(?<![\w.])(?:([245]\d\d)[ -])?([245]\.[0-7]\.\d{1,3})(?!\.?\d)"),
     lambda m: " ".join(g for g in m.groups() if g)),
    (re.compile(r"\b0x([0-9a-f]{4,16})\b", _I), lambda m: "0x" + m[1].upper()),
    (re.compile(r"\b(AADSTS\d{4,7}|CAA\d{5})\b", _I), lambda m: m[1].upper()),
    (re.compile(r"\b([8C][0-9A-F]{7})\b"), lambda m: "0x" + m[1] if re.search("[A-F]", m[1]) else ""),
    (re.compile(r"\bevent\s*id\s*[:#]?\s*(\d{1,5})\b", _I), lambda m: f"event id {m[1]}"),
    (re.compile(r"\b(?:http(?:/\d(?:\.\d)?)?|status code)\s*:?\s*([1-5]\d\d)\b", _I), lambda m: f"http {m[1]}"),
    (re.compile(r"\b([1-5]\d\d)\s+(?:forbidden|not found|unauthorized|bad request|internal server error|service "
                r"unavailable|bad gateway|gateway time-?out|too many requests)\b", _I), lambda m: f"http {m[1]}"),
    (re.compile(r"\b((?:ERROR|ERR|STATUS|E|[A-Z]+_[EW])_[A-Z0-9]+(?:_[A-Z0-9]+)*)\b"), lambda m: m[1]),
    (re.compile(r"\bKB\s?(\d{6,7})\b", _I), lambda m: f"KB{m[1]}"),
    (re.compile(r"\b(?:version|versi|ver\.?|build|v)\s*:?\s*(\d+(?:\.\d+)+)\b", _I), lambda m: m[1]),
    (re.compile(r"(?<![\w.])(\d{1,5}(?:\.\d{1,5}){2,3})(?![\w.]*\d)"), lambda m: _version(m[1])),
    (re.compile(r"\b(?:kode\s+)?(?:error|kesalahan|galat)(?:\s+(?:code|kode))?\s*[:#]?\s*"
                r"(\d{4,5}-\d{1,4}|-?\d{3,10})\b(?![-/.:]\d)", _I), lambda m: f"error {m[1]}"),
]


def _version(s: str) -> str:
    texts = s.split(".")
    if any(len(p) > 1 and p[0] == "0" for p in texts) or all(len(p) > 2 for p in texts):
        return ""  # time "10.12.01", phone "555.123.4567"
    n = [int(p) for p in texts]
    if len(n) == 4 and max(n) <= 255:
        return ""  # IP address
    if len(n) == 3 and 1900 <= max(n[0], n[2]) <= 2100 and min(n[0], n[2]) <= 31 and n[1] <= 12:
        return ""  # dd.mm.yyyy or yyyy.mm.dd
    return s


def code_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, normalised code) of every error code, status code and version in `text`, in order (kb/redaction.py
    keeps these spans as they are)."""
    found: list[tuple[int, int, str]] = []
    for pattern, normalise in _CODE_PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.span()
            if not any(s < end and start < e for s, e, _ in found) and (code := normalise(m)):
                found.append((start, end, code))
    return sorted(found)


def extract_codes(text: str) -> list[str]:
    """Error codes, status codes and versions in order of appearance, de-duplicated and normalised."""
    return list(dict.fromkeys(code for _, _, code in code_spans(text)))


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


def strip_greeting(line: str) -> str | None:
    """The line without a leading greeting; "" if it was only a greeting; None if it has no greeting."""
    if not (m := _GREETING.match(line.strip())):
        return None
    rest = m["rest"].strip()
    head, sep, tail = rest.partition(",") if "," in rest else rest.partition("!")
    words = [w for w in re.split(r"[\s/]+", head.strip(" .:!")) if w]
    if len(words) <= 5 and all(_ADDRESSEE.match(w.strip(".")) for w in words):
        return tail.strip()
    return rest.lstrip(",!: ") if rest[0] in ",!:" else None


def _first_content(lines: Sequence[str]) -> int:
    return next((k for k, ln in enumerate(lines) if ln and strip_greeting(ln) != ""), len(lines))


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


def _is_signature_line(s: str) -> bool:
    return len(s.split()) <= 12 and s[-1:] != "?" and not _INFO.search(s) and not extract_codes(s)


def greeting_addressee(line: str) -> tuple[int, int] | None:
    """(start, end) in `line` of whom its opening greeting addresses ("Pak Budi" in "Halo Pak Budi, ..."), as
    `strip_greeting` finds it; None when the line opens with no greeting or the greeting names nobody."""
    offset = len(line) - len(line.lstrip())
    if not (m := _GREETING.match(line.strip())):
        return None
    rest = m["rest"]
    head = rest.partition(",")[0] if "," in rest else rest.partition("!")[0]
    words = [w for w in re.split(r"[\s/]+", head.strip(" .:!")) if w]
    if not words or len(words) > 5 or not all(_ADDRESSEE.match(w.strip(".")) for w in words):
        return None
    start = offset + m.start("rest") + len(head) - len(head.lstrip(" .:!"))
    return start, offset + m.start("rest") + len(head.rstrip(" .:!"))


def signoff_end(line: str) -> int | None:
    """Where a sign-off opening `line` ("Thanks, ", "Salam hangat,") ends; None when the line opens with none."""
    m = _SIGNOFF.match(line)
    return m.end() if m else None


def is_signature_name(line: str) -> bool:
    """A signature line that looks like a person's name ("Rina Wijaya"): not a title, company, address or phone."""
    s = line.strip()
    return bool(s) and bool(_NAME.match(s)) and _is_signature_line(s) and not _PHONE.match(s) \
        and not _STRONG_SIG.search(s)


def cut_signature(lines: list[str]) -> list[str]:
    """Cut a "-- " block, a sign-off near the end, then trailing name/title/phone/e-mail/url lines."""
    first = _first_content(lines)
    for i, s in enumerate(lines):
        m = _SIGNOFF.match(s)
        if i > first and (re.fullmatch(r"--+", s) or (
                m and len(s[m.end():].split()) <= 6 and not extract_codes(s)
                and len(tail := [ln for ln in lines[i + 1:] if ln]) <= 10 and all(map(_is_signature_line, tail)))):
            lines = lines[:i]
            break
    end, strong = len(lines), False
    for k in range(len(lines) - 1, -1, -1):
        if not (s := lines[k]):
            continue
        is_strong = bool(_PHONE.match(s) or _STRONG_SIG.search(s))
        if not _is_signature_line(s) or not (is_strong or _NAME.match(s)) or len(s.split()) > 8:
            break
        strong, end = strong or is_strong, k
    return lines[:end] if strong and end > _first_content(lines) else lines


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


def score_sentence(sentence: str, index: int) -> float:
    """Informativeness: codes, error words, products and early position score; pleasantries are -inf."""
    code, info, product = (bool(f(sentence)) for f in (extract_codes, _INFO.search, _PRODUCT.search))
    if _PLEASANTRY.search(sentence) and not (code or info or product):
        return float("-inf")
    return 3.0 * code + 2.0 * info + 1.5 * product + max(0.0, 1.5 - 0.5 * index) - 0.5 * (len(sentence.split()) < 4)


def _normalise_language(language: str) -> str:
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
    scores = [score_sentence(s, k) for k, s in enumerate(sentences)]
    has = [set(extract_codes(s)) for s in sentences]
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
    lang = _normalise_language(language) if language else detect_language(subject + "\n" + cleaned)
    return TicketQuery(text=text, lexical=lexical, codes=tuple(codes), language=lang)
