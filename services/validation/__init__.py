"""llama-mapper: validation."""
