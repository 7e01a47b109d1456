"""Package layout: the repository shows the architecture (services/<name>/, schemas/), the import
name is llama_mapper. Shared domain code lives in services/core, generated gRPC code in services/_proto."""

from setuptools import find_namespace_packages, setup

subpackages = find_namespace_packages("services", exclude=["*__pycache__*"])
setup(
    packages=[
        "llama_mapper",
        *(f"llama_mapper.{name}" for name in subpackages),
        "llama_mapper.schemas",
    ],
    package_dir={"llama_mapper": "services", "llama_mapper.schemas": "schemas"},
)
