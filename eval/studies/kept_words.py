"""Side study (issue 13): Indonesian tickets' rendering with the knowledge base's own words kept as written.

Usage: python eval/studies/kept_words.py INDEX_DIR SET [SET...]
Variants: nothing kept but the dictionary's English words (before), words in at least K passages of the knowledge
base kept too (K = 3, 10, 30), and, when the `indoNLP` package is importable, informal spellings made standard
first (its Kamus Alay lexicon: "ngetik" -> "mengetik"). Prints per set the Indonesian items' MRR@10 / R@3 (tickets,
queries) and how many answerable and out-of-scope items are flagged confident.
"""
from __future__ import annotations

import dataclasses
import sys

from study import open_searcher, read_ticket_set
from search.glossary import load_glossary
from search.ticket_evaluation import article_metrics, ticket_query

OFF = 10 ** 12  # no word is in that many passages


def variants(searcher) -> dict:
    base = load_glossary()
    out = {"dictionary's English only (before)": base.for_vocabulary(searcher.term_df, keep_min_df=OFF)}
    for k in (3, 10, 30):
        out[f"kept: in >= {k} passages"] = base.for_vocabulary(searcher.term_df, keep_min_df=k)
    try:
        from indoNLP.preprocessing.slang_data import SLANG_DATA
    except ImportError:
        return out
    kept = out["kept: in >= 10 passages"]
    standard = {}
    for informal, word in SLANG_DATA.items():
        if informal not in kept.english and (informal,) not in kept.entries:
            english = kept.translate(word)
            if english and english != word:
                standard[(informal,)] = english
    out["kept >= 10, informal spellings made standard"] = dataclasses.replace(kept, entries={**standard, **kept.entries})
    return out


def main() -> None:
    searcher = open_searcher(sys.argv[1])
    glossaries = variants(searcher)
    for folder in sys.argv[2:]:
        qrels, items = read_ticket_set(folder)
        items = [it for it in items if it.get("lang") == "id"]
        answerable = sum(it["id"] in qrels for it in items)
        print(f"== {folder}: {answerable} answerable Indonesian items, {len(items) - answerable} out of scope")
        for name, glossary in glossaries.items():
            searcher.glossary = glossary
            sums: dict[str, list[float]] = {}
            confident = out_of_scope = 0
            for it in items:
                query = ticket_query(it, searcher)
                scores, dense, codes = searcher.retrieve(query)
                flagged = searcher.assess(dense, query, codes)["confident"]
                if it["id"] not in qrels:
                    out_of_scope += flagged
                    continue
                confident += flagged
                m = article_metrics([a for a, _, _ in searcher.group_articles(scores, 10)], qrels[it["id"]])
                for group in ("id", f"id {it.get('kind', 'ticket')}"):
                    s = sums.setdefault(group, [0.0, 0.0, 0])
                    s[0] += m["MRR@10"]; s[1] += m["R@3"]; s[2] += 1
            cells = " | ".join(f"{g} {s[0] / s[2]:.3f}/{s[1] / s[2]:.3f}" for g, s in sums.items())
            print(f"{name:48s} {cells} | confident {confident}/{answerable}, out of scope {out_of_scope}")


if __name__ == "__main__":
    main()
