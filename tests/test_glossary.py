"""Glossary: Indonesian phrases rendered into English support terms, codes and names kept."""
from search.glossary import load_glossary, parse_glossary

SAMPLE = "# comment\ntidak bisa\tcannot\nkirim\tsend\nsurel\temail\nkata sandi\tpassword\nmasuk\tsign in / log in\n"


def test_longest_phrase_first_and_first_alternative():
    g = parse_glossary(SAMPLE + "tidak\tnot\n")
    assert g.translate("tidak bisa masuk") == "cannot sign in"
    assert g.translate("tidak masuk") == "not sign in"


def test_codes_product_names_and_unknown_words_are_kept_function_words_dropped():
    g = parse_glossary(SAMPLE)
    assert g.translate("Halo, Outlook saya tidak bisa kirim surel: error 5.7.57 dan 0x800CCC0E.") == \
        "Outlook cannot send email error 5.7.57 0x800CCC0E."


def test_case_and_punctuation_do_not_block_matches():
    assert parse_glossary(SAMPLE).translate("KATA SANDI, Surel!") == "password email"


def test_packaged_glossary_parses_and_covers_core_terms():
    g = load_glossary()
    assert len(g.entries) >= 300
    for phrase, english in ((("kata", "sandi"), "password"), (("lampiran",), "attachment")):
        assert english in g.entries[phrase]
