"""The registry's metadata store, one module per aggregate over shared transaction helpers."""

# Every read and write is one transaction; every write that changes what serves carries its audit
# entry in the same transaction (tx.Transactions._audit), so no state exists without its history.

from __future__ import annotations

from llama_mapper.registry.store.aliases import Aliases
from llama_mapper.registry.store.evaluations import Evaluations
from llama_mapper.registry.store.rollouts import Rollouts
from llama_mapper.registry.store.targets import Targets
from llama_mapper.registry.store.tx import MAX_PAGE
from llama_mapper.registry.store.versions import Versions

__all__ = ["MAX_PAGE", "RegistryStore"]


class RegistryStore(Versions, Aliases, Evaluations, Targets, Rollouts):
    """Models, versions, aliases, evaluation records, targets, rollouts and their history."""
