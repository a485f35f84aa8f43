"""A method added from outside ferjax: an objective and an evaluator plug-in."""
