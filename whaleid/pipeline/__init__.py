"""Layer 6: the DVC pipeline: artifact paths, what each stage orchestrates, training a named model, pseudo-label rounds, the stage runner, code deps, `whaleid check`."""
