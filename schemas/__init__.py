"""JSON Schemas, shipped as package data (import name llama_mapper.schemas)."""
