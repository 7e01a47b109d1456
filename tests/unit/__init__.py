"""Fast tests that start no server: `pytest` runs these alone."""
