"""llama-mapper: registry."""
