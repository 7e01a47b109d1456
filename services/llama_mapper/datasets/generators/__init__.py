"""Candidate generators, one per source kind: real detectors, vendor shapes, generalization variants."""
