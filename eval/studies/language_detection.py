"""Side study (issue 4): retrieval with the language detected from the text (as the service does) instead of
the set's labels, before and after the vocabulary tie-break of `detect_language`.

Usage: python eval/studies/language_detection.py eval/tickets-dev MINILM_INDEX_DIR
"""
import sys,re
from study import open_searcher, read_ticket_set
import search.tickets as T
from search.searcher import make_query
from search.ticket_evaluation import article_metrics
from search.fusion import fuse_scores
new=T.detect_language
def old(text):
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("’", "'"))
    return "id" if sum(w in T._ID_WORDS for w in words) > sum(w in T._EN_WORDS for w in words) else "en"
S=open_searcher(sys.argv[2]); s=S.settings
qrels,queries=read_ticket_set(sys.argv[1])
items=[q for q in queries if q['id'] in qrels]
for name,fn in (('old',old),('new',new)):
    T.detect_language=fn
    tot={}
    for it in items:
        ticket=T.build_query(it.get('subject',''),it['text'],language=None,max_words=s.query_max_words)
        q=make_query(ticket,it['text'],S.glossary,S.embed)
        d,l,c=S.candidates(q)
        ranking=[a for a,_,_ in S.group_articles(fuse_scores(d,l,c,S.weights_for(q)),10)]
        m=article_metrics(ranking,qrels[it['id']])
        for g in ('all',it.get('lang','en')):
            t=tot.setdefault(g,[0,0,0]); t[0]+=m['MRR@10']; t[1]+=m['R@3']; t[2]+=1
    print(name,{g:(round(a/n,3),round(b/n,3),n) for g,(a,b,n) in tot.items()})
