"""llama-mapper: map any detector output to one canonical compliance taxonomy."""
