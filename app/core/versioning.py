"""Optimistic concurrency, as the services see it: which versions a change may apply to."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VersionMatch:
    """The versions a client's change was based on (`any` for "whatever exists")."""

    versions: frozenset[int]
    any: bool = False

    def accepts(self, version: int) -> bool:
        return self.any or version in self.versions
