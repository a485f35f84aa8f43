"""Evaluation diagnostics computed on host from the collected eval outputs."""
