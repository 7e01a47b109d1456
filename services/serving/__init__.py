"""llama-mapper: serving."""
