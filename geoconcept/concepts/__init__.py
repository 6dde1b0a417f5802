"""The concept bank, concept labels for GPS points, and concept text embeddings."""
