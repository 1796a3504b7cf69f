"""Layer 3: from embeddings to scored neighbours: Faiss search, re-ranking, the classifier blend, local features and their fusion, one scoring chain."""
