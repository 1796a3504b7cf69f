"""whaleid: photo identification of individual animals (Happywhale layout) with ArcFace, Faiss and DVC."""

__version__ = "0.1.0"
