"""Glossary: Indonesian phrases rendered into English support terms, codes and names kept."""
import dataclasses

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


def test_words_the_hand_glossary_lacks_come_from_the_dictionary():
    glossary = load_glossary()
    assert ("kolom",) not in glossary.entries and ("faktur",) not in glossary.entries
    assert glossary.translate("kolom faktur pajak") == "column invoice tax"
    assert glossary.translate("folder Outlook 0x8004010F") == "folder Outlook 0x8004010F"  # English kept


def test_the_knowledge_base_chooses_among_the_dictionary_senses():
    from search.glossary import parse_glossary

    base = dataclasses.replace(parse_glossary(""), alternatives={("sandi",): ["sandhi", "password"]},
                               fallback={("sandi",): "sandhi"})
    assert base.for_vocabulary({"password": 286}).translate("sandi") == "password"  # an IT knowledge base
    assert base.for_vocabulary({}).translate("sandi") == "sandhi"  # no evidence: the dictionary's first


def test_words_the_knowledge_base_uses_are_kept_as_written():
    from search.glossary import KEEP_MIN_DF, load_glossary

    base = load_glossary()
    assert base.for_vocabulary({}).translate("opsi per tampilan") == "options spring view"  # the dictionary's sense
    kb = base.for_vocabulary({"per": KEEP_MIN_DF, "notes": 40})  # an IT knowledge base writes "per" and "Notes"
    assert kb.translate("opsi per tampilan") == "options per view"
    assert base.for_vocabulary({}).translate("folder Notes") == "folder notebook"
    assert kb.translate("folder Notes") == "folder Notes"
    assert base.for_vocabulary({"per": KEEP_MIN_DF - 1}).translate("per") == "spring"  # too rare to be its own word
    assert kb.translate("kata sandi") == base.translate("kata sandi") == "password"  # the hand glossary still first


def test_inflected_indonesian_words_are_found_by_their_stem():
    from search.glossary import indonesian_stem, parse_glossary

    assert indonesian_stem("dicetak") == indonesian_stem("mencetak") == "cetak"
    base = dataclasses.replace(parse_glossary(""), alternatives={("cetak",): ["print"]}, fallback={("cetak",): "print"})
    assert base.for_vocabulary({"print": 3}).translate("dokumen dicetak") == "dokumen print"


def test_a_phrase_is_found_only_from_its_first_word_one_word_entries_anywhere():
    g = parse_glossary(SAMPLE + "sandi\tcipher\n")
    assert g._phrase_starts[0] == {"tidak", "kata"}  # first words of the glossary's phrases
    assert g.translate("sandi kata sandi bisa kirim") == "cipher password send"  # "bisa" is a function word
