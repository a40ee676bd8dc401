"""redact(text): customer text with e-mail addresses, phones, long numbers, IPs, token URLs and names replaced."""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urlsplit

# The ticket cleaner (search/tickets.py) and redaction share these rules of greetings, sign-offs, signature blocks and
# error codes, so that what redaction calls a signature here is what the cleaner drops from a query there.
from kb.ticket_text import code_spans, cut_signature, greeting_addressee, is_signature_name, signoff_end

EMAIL, PHONE, NUMBER, IP, URL, NAME = "[email]", "[phone]", "[number]", "[ip]", "[url]", "[name]"

_URL = re.compile(r"(?<![\w@.])(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+", re.I)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}(?:%[\w.]+)?(?![\w:])")
# Protected from the digit rules below (never redacted): dates and times of day, besides the error codes.
_DATE = re.compile(r"(?<![\w.])(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?![\w.]*\d)")
_TIME = re.compile(r"(?<![\w.:])\d{1,2}[:.]\d{2}(?::\d{2}(?:[.,]\d+)?)?(?![\w:])")
# A run of digit groups joined by single spaces, dots or dashes, optionally after "+", one group may be in parentheses.
_DIGITS = re.compile(r"(?<![\w+.\-/])\+?\s?(?:\(\d{1,5}\)\s?)?\d+(?:[ .\-]\d+|[ .\-]?\(\d{1,5}\)\s?\d+)*(?!\w)")
_US_PHONE = re.compile(r"\(?\d{3}\)?[ .\-]?\d{3}[ .\-]\d{4}")
_CARD = re.compile(r"\d{4}(?: \d{4}){2,3}(?: \d{1,4})?|\d{4} \d{6} \d{5}")
# Path segments that carry secrets or people: long random-looking pieces, UUIDs, e-mail addresses, OneDrive users.
_TOKEN_PIECE = re.compile(r"(?=[\w=+%~]*\d)(?=[\w=+%~]*[A-Za-z])[\w=+%~]{16,}|[0-9a-f]{24,}", re.I)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_PERSONAL = {"personal", "users", "user", "u", "profile", "profiles", "people"}
_TRAILING = ".,;:!?)]}'\""
# Words of a greeting or signature that are not names: titles and honorifics, groups, teams, products.
_NOT_NAMES = frozenset("""mr mrs ms miss mx dr prof sir madam madame pak bu bapak ibu kak mas mbak bang dik saudara
saudari tuan nyonya nona team tim all there everyone everybody support helpdesk admin administrator it hr guys folks
rekan rekan-rekan semua colleagues friends customer service desk microsoft office outlook teams windows""".split())
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")


def redact(text: str) -> str:
    """`text` with personal data replaced by typed placeholders ([email], [phone], [number], [ip], [url], [name]).

    Kept: error codes and versions the ticket cleaner recognises (0x8004010F, 5.7.124, AADSTS50076, error 80070005,
    KB5034441, 16.0.17328.20124), dates and times, numbers of up to 8 digits. URLs keep their host and path without
    query string and fragment; a URL whose path looks like it carries a token, a user or an address becomes [url].
    Names are replaced where the ticket cleaner sees a greeting ("Halo Pak Budi," -> "Halo Pak [name],"), a sign-off
    ("Thanks, Rina") or a signature block ("Salam,\\nDewi Lestari").
    """
    if not text or not isinstance(text, str):
        return text if isinstance(text, str) else ""
    spans: list[tuple[int, int, str | None]] = []  # (start, end, replacement); None: keep as it is

    def add(start: int, end: int, replacement: str | None) -> None:
        if start < end and not any(s < end and start < e for s, e, _ in spans):
            spans.append((start, end, replacement))

    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in _TRAILING and not _balanced(text[m.start():end]):
            end -= 1
        add(m.start(), end, _redact_url(text[m.start():end]))
    for m in _EMAIL.finditer(text):
        add(*m.span(), EMAIL)
    for m in _IPV6.finditer(text):
        if _is_ipv6(candidate := m[0].rstrip(".")):
            add(m.start(), m.start() + len(candidate), IP)
    for m in _IPV4.finditer(text):
        if all(int(part) <= 255 for part in m[0].split(".")):
            add(*m.span(), IP)
    for start, end, _ in code_spans(text):
        add(start, end, None)
    for pattern in (_DATE, _TIME):
        for m in pattern.finditer(text):
            add(*m.span(), None)
    masked = list(text)  # what is already taken or kept is invisible to the digit rules
    for start, end, _ in spans:
        masked[start:end] = "\0" * (end - start)
    for m in _DIGITS.finditer("".join(masked)):
        if kind := _digit_kind(m[0].lstrip()):
            add(m.end() - len(m[0].lstrip()), m.end(), kind)
    for start, end in _name_spans(text):
        add(start, end, NAME)
    out, at = [], 0
    for start, end, replacement in sorted(spans):
        if replacement is not None:
            out += [text[at:start], replacement]
            at = end
    return "".join(out) + text[at:]


def _balanced(url: str) -> bool:
    """A trailing ")" that closes a "(" inside the URL belongs to it (Wikipedia-style paths)."""
    return url.endswith(")") and url.count("(") >= url.count(")")


def _redact_url(url: str) -> str:
    """Scheme, host and path of `url`; [url] when its host is an address or its path carries a token or a person."""
    bare = url.lower().startswith("www.")
    try:
        parts = urlsplit(("http://" + url) if bare else url)
        host = parts.hostname or ""
    except ValueError:
        return URL
    if not host or "@" in parts.netloc or _is_ip(host) or "@" in parts.path:
        return URL
    segments = [s for s in parts.path.split("/") if s]
    for k, segment in enumerate(segments):
        pieces = re.split(r"[-_.,;\s]", unquote(segment))
        if _UUID.search(segment) or any(_TOKEN_PIECE.fullmatch(p) for p in pieces) \
                or any(p.isdigit() and len(p) >= 9 for p in pieces) \
                or (segment.lower() in _PERSONAL and k + 1 < len(segments)):
            return URL
    netloc = parts.netloc if parts.port is None else f"{host}:{parts.port}"
    return (netloc if bare else f"{parts.scheme}://{netloc}") + parts.path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_ipv6(candidate: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(candidate.split("%")[0]), ipaddress.IPv6Address)
    except ValueError:
        return False


def _digit_kind(run: str) -> str | None:
    """[phone], [number] or None (keep) for a run of digit groups."""
    digits = sum(c.isdigit() for c in run)
    separated = any(c in " .-()" for c in run)
    first = run.lstrip("(")
    if run.startswith("+"):
        return PHONE if 7 <= digits <= 15 else NUMBER if digits >= 9 else None
    if first.startswith("0") and separated and 9 <= digits <= 13:
        return PHONE  # Indonesian mobile (0812-3456-7890) and landline ((021) 5299 1234) numbers, local style
    if first.startswith("62") and separated and 10 <= digits <= 14:
        return PHONE  # +62 written without its plus
    if first.startswith("08") and 10 <= digits <= 13:
        return PHONE
    if separated and digits == 10 and _US_PHONE.fullmatch(run):
        return PHONE
    if digits < 9:
        return None
    if not separated or _CARD.fullmatch(run) or (re.fullmatch(r"[\d-]+", run) and "-" in run):
        return NUMBER  # card, account and NIK numbers, plain or in groups
    return None  # a list of small numbers ("ports 25 587 465 993")


def _name_spans(text: str) -> list[tuple[int, int]]:
    """Spans of person names in greetings, sign-offs and signature blocks, as the ticket cleaner finds those."""
    lines, starts, at = [], [], 0
    for line in text.splitlines(keepends=True):
        starts.append(at)
        lines.append(line.rstrip("\r\n"))
        at += len(line)
    flat = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in lines]
    spans: list[tuple[int, int]] = []
    for k, line in enumerate(lines):
        if (found := greeting_addressee(line)) is not None:
            spans += _names_in(line, *found, starts[k])
            break
        if line.strip():
            break  # only a greeting that opens the text
    block = min(len(cut_signature(list(flat))), _signoff_block(flat))
    for k in range(block, len(lines)):
        line = lines[k]
        offset = len(line) - len(line.lstrip())
        if (signed := _signed_name(line, offset, starts[k])) is not None:
            spans += signed
            continue
        head = line.split("|")[0]
        if is_signature_name(head.strip().rstrip(",")):
            spans += _names_in(line, 0, len(head), starts[k])
    last = max((k for k, line in enumerate(lines) if line.strip()), default=None)
    if last is not None and last < block:  # "... it fails. Thanks, Rina": a sign-off ending the last line
        sentence = max((m.end() for m in re.finditer(r"[.!?]\s+", lines[last])), default=0)
        spans += _signed_name(lines[last], sentence, starts[last]) or []
    return spans


def _signed_name(line: str, at: int, base: int) -> list[tuple[int, int]] | None:
    """Name spans after a sign-off starting at line[at:] ("Thanks, Rina"); None when no sign-off starts there."""
    if (end := signoff_end(line[at:])) is None:
        return None
    rest = line[at + end:]
    if rest.strip() and len(rest.split()) <= 4 and is_signature_name(rest.strip().rstrip(",.!")):
        return _names_in(line, at + end, len(line), base)
    return []


def _signoff_block(lines: list[str]) -> int:
    """Index of a sign-off line ("Thanks,", "Salam,", "--") followed by at most 10 short lines, else len(lines)."""
    for k, line in enumerate(lines):
        end = 0 if re.fullmatch(r"--+", line) else signoff_end(line)
        if end is None or len(line[end:].split()) > 4:
            continue
        tail = [ln for ln in lines[k + 1:] if ln]
        if len(tail) <= 10 and all(len(ln.split()) <= 8 and not ln.endswith("?") for ln in tail):
            return k
    return len(lines)


def _names_in(line: str, start: int, end: int, base: int) -> list[tuple[int, int]]:
    """Spans (offset by `base`) of the capitalised words in line[start:end] that are not titles or groups;
    neighbouring name words make one span ("Rina Wijaya")."""
    spans: list[tuple[int, int]] = []
    for m in _WORD.finditer(line, start, end):
        word = m[0].rstrip(".,")
        if not word[:1].isupper() or word.lower().rstrip(".") in _NOT_NAMES:
            continue
        s, e = base + m.start(), base + m.start() + len(word)
        if spans and not line[spans[-1][1] - base:m.start()].strip():
            spans[-1] = (spans[-1][0], e)
        else:
            spans.append((s, e))
    return spans
