"""Layer 4: from neighbours to predictions and scores: the new_individual rule, MAP@5, the submission file, baselines, the match report."""
