"""Side study (issue 4): MiniLM, multilingual-e5-small and both dense arms fused, on a ticket set.

Usage: TR=1 python eval/studies/e5_dual.py eval/tickets-dev MINILM_INDEX_DIR E5_INDEX_DIR
(both indexes built from the same content with `kb index`, the second with KB_MODEL=multilingual-e5-small
and the same KB_MODEL_CACHE_DIR in the environment); TR=0 switches the Indonesian glossary off. Prints MRR@10/R@3 per group.
"""
import os, sys, dataclasses
from study import open_searcher, read_ticket_set
from search.ticket_evaluation import article_metrics, ticket_query, METRICS
from search.fusion import fuse_scores, FusionWeights, normalise_minmax, rank
TR=os.environ.get('TR','1')=='1'
S_m=open_searcher(sys.argv[2])
S_e=open_searcher(sys.argv[3],'multilingual-e5-small')
pid_e={p.passage_id:k for k,p in S_e.version.passages(range(S_e.version.size)).items()}
row_m2e={k:pid_e[p.passage_id] for k,p in S_m.version.passages(range(S_m.version.size)).items()}
row_e2m={v:k for k,v in row_m2e.items()}
qrels,queries=read_ticket_set(sys.argv[1])
items=[q for q in queries if q['id'] in qrels]
sums={}
def add(name,groups,scores,S,qid):
    ranking=[a for a,_,_ in S.group_articles(scores,10)]
    m=article_metrics(ranking,qrels[qid])
    for g in groups:
        d=sums.setdefault((name,g),{k:0.0 for k in METRICS}); 
        for k,v in m.items(): d[k]+=v
counts={}
for it in items:
    lang,kind=it.get('lang','en'),it.get('kind','ticket')
    groups=('all',lang,f'{lang} {kind}')
    for g in groups: counts[g]=counts.get(g,0)+1
    q=ticket_query(it,S_m,translate=TR)            # rendering (+ original if has_indonesian)
    q0=ticket_query(it,S_m,translate=False)   # original only
    dm,lm,cm=S_m.candidates(q)
    add('mini service',groups,fuse_scores(dm,lm,cm,S_m.weights_for(q)),S_m,it['id'])
    # e5 variants
    qboth=dataclasses.replace(q,alternatives=(q0.dense,)) if q.dense!=q0.dense else q
    for qname,qq in (('orig',q0),('render',q),('both',qboth)):
        de,le,ce=S_e.candidates(dataclasses.replace(qq,lexical=q.lexical))
        add(f'e5 dense {qname}',groups,{r:de[r] for r in rank(de)[:100]},S_e,it['id'])
        for w in (0.03,0.07,0.15,0.3):
            add(f'e5 {qname} w={w}',groups,fuse_scores(de,le,ce,FusionWeights(w,0.5)),S_e,it['id'])
        if qname=='both':
            # dual: union candidates, exact cosines from both
            rows=set(de)|{row_m2e[r] for r in dm}
            rl=list(rows)
            ve=S_e.encoder.encode_queries([qboth.dense,*qboth.alternatives])
            vm=S_m.encoder.encode_queries([q.dense,*q.alternatives])
            ce_=dict(zip(rl,(S_e.version.vectors(rl)@ve.T).max(1).tolist()))
            cm_=dict(zip(rl,(S_m.version.vectors([row_e2m[r] for r in rl])@vm.T).max(1).tolist()))
            ne,nm=normalise_minmax(ce_),normalise_minmax(cm_)
            lex={row_m2e[r]:v for r,v in lm.items()}; cod={row_m2e[r]:v for r,v in cm.items()}
            nl=normalise_minmax(lex)
            for a in (0.3,0.5,0.7):
                for w in (0.07,0.15,0.3):
                    sc={r:a*ne.get(r,0)+(1-a)*nm.get(r,0)+w*nl.get(r,0)+0.5*cod.get(r,0) for r in rows|set(lex)}
                    add(f'dual e5={a} w={w}',groups,sc,S_e,it['id'])
out={}
for (n,g),d in sums.items(): out.setdefault(n,{})[g]=round(d['MRR@10']/counts[g],3), round(d['R@3']/counts[g],3)
gs=['all','en','id','en ticket','en query','id ticket','id query']
print('variant | '+' | '.join(gs))
for n in out: print(n,'|',' | '.join(f'{out[n][g][0]:.3f}/{out[n][g][1]:.2f}' for g in gs if g in out[n]))
