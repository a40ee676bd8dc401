"""Side study (issue 4): one confidence calibration for all queries against one per query language, judged by
leave-one-out (each query decided by a fit without it); calibration only, no exact-code rule.

Usage: python eval/studies/calibration_by_language.py MODEL INDEX_DIR eval/tickets-dev
(MODEL all-MiniLM-L6-v2 or multilingual-e5-small; KB_MODEL_CACHE_DIR where the e5 folder is).
Prints (answerable flagged confident, unanswerable flagged confident, accuracy) per language, and the fits.
"""
import sys
from study import open_searcher, read_ticket_set
from search.ticket_evaluation import ticket_query
from search.confidence import features, fit_calibration
S=open_searcher(sys.argv[2],sys.argv[1])
qrels,queries=read_ticket_set(sys.argv[3])
rows=[]
for it in queries:
    q=ticket_query(it,S); d,_,c=S.candidates(q); top,gap=features(d)
    rows.append((it.get('lang','en'),top,gap,it['id'] in qrels))
def evaluate(pred):
    out={}
    for lang in ('all','en','id'):
        ch=[(p,l) for (lg,_,_,l),p in zip(rows,pred) if lang in ('all',lg)]
        ans=[p>=0.5 for p,l in ch if l]; un=[p>=0.5 for p,l in ch if not l]
        out[lang]=(round(sum(ans)/len(ans),3),round(sum(un)/len(un),3),round((sum(ans)+len(un)-sum(un))/len(ch),3))
    return out
one=fit_calibration([(t,g,l) for _,t,g,l in rows])
print('single in-sample',evaluate([one.probability(t,g) for _,t,g,_ in rows]))
# leave-one-out, single vs per-language
loo1,loo2=[],[]
for i,(lg,t,g,l) in enumerate(rows):
    rest=[r for j,r in enumerate(rows) if j!=i]
    c1=fit_calibration([(tt,gg,ll) for _,tt,gg,ll in rest]); loo1.append(c1.probability(t,g))
    c2=fit_calibration([(tt,gg,ll) for lgg,tt,gg,ll in rest if lgg==lg]); loo2.append(c2.probability(t,g))
print('single LOO',evaluate(loo1))
print('per-language LOO',evaluate(loo2))
for lang in ('en','id'): print(lang, fit_calibration([(t,g,l) for lg,t,g,l in rows if lg==lang]))
