"""longretr: long-document search with bidirectional (diffusion-style) LM embeddings."""

__version__ = "0.1.0"
