"""Detector readers: one module per vendor, each parsing its documented native output."""
