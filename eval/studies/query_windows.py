"""Side study (issue 4): a ticket as several query vectors (the service's query plus windows of N words over
every kept sentence of the cleaned ticket), combined per passage by the best cosine (max) or by half the
service query's cosine plus half the windows' mean (mean). Tickets only.

Usage: python eval/studies/query_windows.py eval/tickets-dev MINILM_INDEX_DIR
"""
import sys,dataclasses
from study import open_searcher, read_ticket_set
from search.ticket_evaluation import ticket_query, article_metrics
from search.fusion import fuse_scores
from search.tickets import clean_ticket, split_sentences, score_sentence
S=open_searcher(sys.argv[2])
qrels,queries=read_ticket_set(sys.argv[1])
items=[q for q in queries if q['id'] in qrels and q.get('kind','ticket')=='ticket']
def windows(it, size):
    sents=split_sentences(clean_ticket(it['text']))
    kept=[x for k,x in enumerate(sents) if score_sentence(x,k)>float('-inf')]
    out,cur=[],[]
    for x in kept:
        if cur and len(' '.join(cur+[x]).split())>size: out.append(' '.join(cur)); cur=[]
        cur.append(x)
    if cur: out.append(' '.join(cur))
    subj=it.get('subject','')
    return [f"{subj}. {w}" for w in out]
tot={}; long=0
for it in items:
    q=ticket_query(it,S)
    wl=len(clean_ticket(it['text']).split()); long+=wl>80
    res={}
    d,l,c=S.candidates(q); res['service']=fuse_scores(d,l,c,S.weights_for(q))
    for size in (40,60,80,100):
        ws=windows(it,size)
        if q.language=='id' and S.glossary: ws=[S.glossary.translate(w) for w in ws]
        qm=dataclasses.replace(q,alternatives=tuple(q.alternatives)+tuple(ws))
        d2,l2,c2=S.candidates(qm)   # best cosine over all vectors
        res[f'max+{size}']=fuse_scores(d2,l2,c2,S.weights_for(q))
        # mean of cosines across all vectors
        vecs=S.encoder.encode_queries([qm.dense,*qm.alternatives]); rows=list(d2)
        cos=S.version.vectors(rows)@vecs.T
        dm=dict(zip(rows,(0.5*cos[:,0]+0.5*cos[:,1:].mean(1) if cos.shape[1]>1 else cos[:,0]).tolist()))
        res[f'mean+{size}']=fuse_scores(dm,l2,c2,S.weights_for(q))
    for n,sc in res.items():
        m=article_metrics([a for a,_,_ in S.group_articles(sc,10)],qrels[it['id']])
        for g in ('all',it['lang']):
            t=tot.setdefault((n,g),[0,0,0]); t[0]+=m['MRR@10']; t[1]+=m['R@3']; t[2]+=1
print('tickets',len(items),'cleaned >80 words',long)
for k,(a,b,n) in sorted(tot.items()): print(k,round(a/n,3),round(b/n,3),n)
