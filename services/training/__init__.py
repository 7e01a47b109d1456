"""llama-mapper: training."""
