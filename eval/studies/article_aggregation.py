"""Side study (issue 4): an article scored as its best passage plus b x its second-best, on a ticket set.

Usage: python eval/studies/article_aggregation.py eval/tickets-dev MINILM_INDEX_DIR
"""
import sys
from study import open_searcher, read_ticket_set
from search.ticket_evaluation import ticket_query, article_metrics
from search.fusion import fuse_scores, rank
S=open_searcher(sys.argv[2])
qrels,queries=read_ticket_set(sys.argv[1])
items=[q for q in queries if q['id'] in qrels]
def arts(scores,bonus):
    g={}
    for r in rank(scores): g.setdefault(S.row_article[r],[]).append(scores[r])
    sc={a:v[0]+bonus*(v[1] if len(v)>1 else 0) for a,v in g.items()}
    return sorted(sc,key=lambda a:-sc[a])[:10]
tot={}
for it in items:
    q=ticket_query(it,S); d,l,c=S.candidates(q); f=fuse_scores(d,l,c,S.weights_for(q))
    for b in (0,0.05,0.1,0.2,0.3):
        m=article_metrics(arts(f,b),qrels[it['id']])
        for g in ('all',it.get('lang','en')):
            t=tot.setdefault((b,g),[0,0,0]); t[0]+=m['MRR@10']; t[1]+=m['R@3']; t[2]+=1
for k,(a,b_,n) in sorted(tot.items()): print(k, round(a/n,3), round(b_/n,3))
