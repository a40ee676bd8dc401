"""Side study (issue 4): retrieval with the language detected from the text (as the service does) instead of
the set's labels, before and after the vocabulary tie-break of `detect_language`.

Usage: python eval/studies/language_detection.py eval/tickets-dev MINILM_INDEX_DIR
"""
import os,sys,re
from pathlib import Path
os.environ['HF_HUB_OFFLINE']='1'
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pathlib import Path
from kb.settings import load_settings
from kb.embedder import Embedder
from kb import store
import search.tickets as T
from search.searcher import Searcher, make_query
from search.ticket_evaluation import article_metrics
from search.evaluation import read_jsonl, read_qrels
from search.fusion import fuse_scores
new=T.detect_language
def old(text):
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("’", "'"))
    return "id" if sum(w in T._ID_WORDS for w in words) > sum(w in T._EN_WORDS for w in words) else "en"
s=load_settings()
folder=Path(sys.argv[1]); idx=Path(sys.argv[2])
emb=Embedder('all-MiniLM-L6-v2',query_engine='onnx',cache_dir=Path('var/models'))
S=Searcher(store.open_current(idx,emb.model_id),emb,s)
qrels=read_qrels(folder/'qrels.tsv')
items=[q for q in read_jsonl(folder/'queries.jsonl') if q['id'] in qrels]
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
