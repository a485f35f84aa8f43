"""Evaluator plug-ins chosen by `config.evals`; `ferjax.evaluate` runs them."""
