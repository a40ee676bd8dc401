"""Text rules of support tickets shared by the ticket cleaner and the redactor: error codes, greetings, sign-offs, signatures."""
from __future__ import annotations

import re
from typing import Sequence

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

# Every pattern above needs a digit or an underscore, except a hex code of letters only after a "C" ("CAFEBABE"): a
# text with none of them holds no code, found without running the twelve patterns (most of a ticket's sentences).
_MAY_HOLD_CODE = re.compile(r"[\d_]|\bC[A-F]{7}\b")


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
    if not _MAY_HOLD_CODE.search(text):
        return []
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

