"""The model side: the model protocol, the hybrid mapper, adapter compatibility, base models, engines."""
