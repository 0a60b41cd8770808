"""Orchestration: the canonical runner (Snakemake API) and the Ray compute backend."""
