"""Orchestration: the canonical runner (Snakemake API) and the command-line front end."""
