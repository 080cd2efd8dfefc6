"""Hyperparameter search (`tunesmith tune`) on Optuna: the search space (space), the trial loop
with journal storage, resume and pruning (search), and what a search writes (outputs)."""
