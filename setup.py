"""Package layout: the import package lives in services/llama_mapper, so a file's path names its
module. services/llama_mapper/schemas links to the top-level schemas/, the one source of the JSON
Schemas, which ships as package data (a wheel carries the files themselves)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages("services", include=["llama_mapper*"]),
    package_dir={"": "services"},
)
