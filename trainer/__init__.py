"""LLM pretraining: unified vocabulary, task layouts, prefix-LM model, AGD data, engine, sampling."""
