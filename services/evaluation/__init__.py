"""llama-mapper: evaluation."""
