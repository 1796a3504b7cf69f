"""Layer 7: the `whaleid` command."""
