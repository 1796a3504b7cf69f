"""Layer 5: the gallery folder `whaleid identify` searches and `whaleid gallery add` grows."""
