"""Data pipeline: sample media, ingestion (videos -> clip shards) and tokenization (-> token shards)."""
