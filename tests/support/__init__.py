"""Helpers the tests import as modules: real backends, adapters, datasets, eval sets."""
