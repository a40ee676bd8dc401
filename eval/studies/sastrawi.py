"""Side study (issue 4): Sastrawi stemming of Indonesian articles and queries in the lexical arm.

Usage (needs `pip install Sastrawi==1.0.1`, not a dependency): python eval/studies/sastrawi.py MINILM_INDEX_DIR eval/starter-id
Builds two in-memory FTS5 tables from the index passages (as indexed; Indonesian articles Sastrawi-stemmed)
and compares BM25 alone and fused with the index's dense arm (w=0.3).
"""
import sys,sqlite3
from study import open_searcher, read_ticket_set
from Sastrawi.Stemmer.StemmerFactory import StemmerFactory
from search.ticket_evaluation import ticket_query, article_metrics
from kb.index.faiss_sqlite.fts import match_expression  # this study builds FTS5 tables of its own
from search.lexical import extract_terms, TOKEN
from search.fusion import fuse_scores, FusionWeights
stem=StemmerFactory().create_stemmer().stem
cache={}
def st(w):
    if w not in cache: cache[w]=stem(w) or w
    return cache[w]
def stem_text(t): return ' '.join(st(w) for w in TOKEN.findall(t.lower()))
S=open_searcher(sys.argv[1])
arts={a.id:a for a in S.version.articles()}
rows=[(k,arts[p.article_id].title,p.heading_path,p.text,arts[p.article_id].language) for k,p in S.version.passages(range(S.version.size)).items()]
mem=sqlite3.connect(':memory:')
for name in ('plain','stem'):
    mem.execute(f"create virtual table {name} using fts5(title,headings,body,tokenize='porter unicode61 remove_diacritics 2')")
for r,title,hp,text,lang in rows:
    heads=' '.join(hp)
    mem.execute('insert into plain(rowid,title,headings,body) values(?,?,?,?)',(r,title,heads,text))
    if lang=='id': title,heads,text=stem_text(title),stem_text(heads),stem_text(text)
    mem.execute('insert into stem(rowid,title,headings,body) values(?,?,?,?)',(r,title,heads,text))
def lex(table,terms):
    if not terms: return {}
    return dict(mem.execute(f"select rowid,-bm25({table},2.0,1.5,1.0) s from {table} where {table} match ? order by s desc limit 100",(match_expression(terms),)).fetchall())
qrels,queries=read_ticket_set(sys.argv[2])
items=[q for q in queries if q['id'] in qrels]
tot={}
for it in items:
    q=ticket_query(it,S)
    dense,_,codes=S.candidates(q)
    terms=extract_terms(q.lexical)
    sterms=list(dict.fromkeys(st(t) for t in terms))
    res={'lex plain':lex('plain',terms),'lex stem':lex('stem',sterms)}
    for w in (0.3,):
        res[f'fused plain w={w}']=fuse_scores(dense,res['lex plain'],codes,FusionWeights(w,0.5))
        res[f'fused stem w={w}']=fuse_scores(dense,res['lex stem'],codes,FusionWeights(w,0.5))
    for n,sc in res.items():
        # fused needs dense for lexical-only rows: recompute exact cosines
        ranking=[a for a,_,_ in S.group_articles(sc,10)]
        m=article_metrics(ranking,qrels[it['id']])
        d=tot.setdefault(n,{'MRR@10':0,'R@1':0,'R@3':0})
        for k in d: d[k]+=m[k]/len(items)
    if it['id'] in ('ids-q19','ids-q02'): print(it['id'],terms,sterms)
for n,d in tot.items(): print(n,{k:round(v,3) for k,v in d.items()})
