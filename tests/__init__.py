"""The test suite: unit/ (fast, no servers; plain `pytest`), integration/ (real servers), support/."""
