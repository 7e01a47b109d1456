"""Training data: the dataset builder (mapper + analyst rows) and the golden set's generator."""
