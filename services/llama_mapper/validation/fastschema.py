"""Schema validation of many rows, exactly as jsonschema decides it, without its per-row cost."""

# A row schema here is objects of properties and arrays of items over small leaf schemas. For
# those two node shapes validity decomposes exactly: an object is valid when its type, required
# keys and (closed) key set are right and every property value is valid; an array when its length
# is in bounds and every item is valid. Such nodes are checked here; every other node is a leaf
# handed to jsonschema, and leaf answers are memoized on the value's canonical JSON (labels,
# roles, the system prompt and split names repeat across rows). A node using any other keyword is
# a leaf too, so the result is always jsonschema's.

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

_ANNOTATIONS = {"description", "title", "$schema", "$id", "$defs", "default", "examples"}
_OBJECT_KEYS = {"type", "required", "additionalProperties", "properties"} | _ANNOTATIONS
_ARRAY_KEYS = {"type", "items", "minItems", "maxItems"} | _ANNOTATIONS


class FastValidator:
    def __init__(self, validator: Draft202012Validator) -> None:
        self.validator = validator
        self._memo: dict[tuple[int, str], bool] = {}
        self._leaves: dict[int, Draft202012Validator] = {}

    def is_valid(self, instance: Any) -> bool:
        return self._valid(self.validator.schema, instance)

    def _valid(self, node: Any, value: Any) -> bool:
        if isinstance(node, dict):
            keys = node.keys()
            if node.get("type") == "object" and keys <= _OBJECT_KEYS:
                return self._object(node, value)
            if node.get("type") == "array" and keys <= _ARRAY_KEYS and "items" in node:
                return self._array(node, value)
        return self._leaf(node, value)

    def _object(self, node: dict[str, Any], value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        if any(key not in value for key in node.get("required", ())):
            return False
        properties = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            sub = properties.get(key)
            if sub is None:
                if extra is False:
                    return False
                if extra is not True and not self._valid(extra, item):
                    return False
            elif not self._valid(sub, item):
                return False
        return True

    def _array(self, node: dict[str, Any], value: Any) -> bool:
        if not isinstance(value, list):
            return False
        if len(value) < node.get("minItems", 0) or len(value) > node.get("maxItems", len(value)):
            return False
        return all(self._valid(node["items"], item) for item in value)

    def _leaf(self, node: Any, value: Any) -> bool:
        key = (id(node), json.dumps(value, sort_keys=True, ensure_ascii=False))
        known = self._memo.get(key)
        if known is None:
            leaf = self._leaves.get(id(node))
            if leaf is None:
                leaf = self._leaves[id(node)] = self.validator.evolve(schema=node)
            known = self._memo[key] = leaf.is_valid(value)
        return known
