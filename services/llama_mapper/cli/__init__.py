"""llama-mapper: cli."""
