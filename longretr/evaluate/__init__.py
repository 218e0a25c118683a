"""LongEmbed-style evaluation (`longretr eval`, `make bench-longembed`).

data.py      the published LongEmbed layout (corpus/queries/qrels per task, passkey/needle by length)
synth.py     offline regeneration of passkey and needle in that layout (needles.py: facts and names)
metrics.py   Acc@1 and nDCG@10
baselines.py longretr configs, BM25 (bm25s), all-MiniLM-L6-v2 over chunks
runner.py    one run: sets -> scores (ties broken against the system) -> metrics; report.py: JSON, Markdown
             table, PNG, TREC runs and qrels
mteb.py      an mteb-compatible encoder for the official tasks
"""
