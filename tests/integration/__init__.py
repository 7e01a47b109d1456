"""Tests that start the real thing: gRPC servers, PostgreSQL, moto S3, Ray, vLLM (`make test`)."""
