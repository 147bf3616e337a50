"""Task protocols (expression, retrieval, batch_effect, classification) and their YAML definitions."""
