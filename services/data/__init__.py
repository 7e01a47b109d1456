"""Training data: the dataset builder (mapper + analyst rows), its manifest and the frozen golden set."""
