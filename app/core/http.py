"""Entity tags (RFC 9110 section 8.8.3) and caching directives as the routers write them."""

import hashlib
import re
from dataclasses import dataclass

from app.core.versioning import VersionMatch

_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]*)"\s*')
# `*`, or a comma-separated list of entity tags (RFC 9110 section 13.1.1), as
# a JSON Schema pattern for the OpenAPI document.
_TAG = r'(?:W/)?"[\x21\x23-\x7E]*"'
ENTITY_TAG_LIST = rf"^(?:\*|[ \t]*{_TAG}(?:[ \t]*,[ \t]*{_TAG})*[ \t]*)$"


# RFC 9111: a cache may store the response but must ask before using it again.
REVALIDATE = "no-cache"
# Nothing stores it: errors, token responses, anything asked for with credentials.
NO_STORE = "no-store"


def etag(version: int) -> str:
    return f'"{version}"'


def content_tag(body: bytes) -> str:
    """A strong validator made from the representation itself (128 bits of its sha256):
    every worker computes the same one, and it changes whenever a byte does."""
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _EntityTags:
    any: bool
    strong: frozenset[str]
    weak: frozenset[str]


def _parse(header: str) -> _EntityTags | None:
    """A list of entity-tags, or `*`; None when the header is malformed."""
    if header.strip() == "*":
        return _EntityTags(any=True, strong=frozenset(), weak=frozenset())
    strong: set[str] = set()
    weak: set[str] = set()
    for part in header.split(","):
        if not part.strip():
            continue  # RFC 9110 lists tolerate empty elements
        found = _ENTITY_TAG.fullmatch(part)
        if found is None:
            return None
        (weak if found.group(1) else strong).add(found.group(2))
    return _EntityTags(any=False, strong=frozenset(strong), weak=frozenset(weak))


def _versions(tags: frozenset[str]) -> frozenset[int]:
    # Entity tags compare character by character: `"02"` is not the tag `"2"`.
    return frozenset(
        int(t) for t in tags if t.isascii() and t.isdigit() and len(t) <= 19 and str(int(t)) == t
    )


def if_match(header: str | None) -> VersionMatch | None:
    """What `If-Match` accepts, by strong comparison; None when there is no header.

    A malformed header matches nothing, so the update is refused with 412
    rather than applied without the check the client asked for.
    """
    if header is None:
        return None
    tags = _parse(header)
    if tags is None:
        return VersionMatch(versions=frozenset())
    return VersionMatch(versions=_versions(tags.strong), any=tags.any)


def if_none_match_hits(header: str | None, tag: str) -> bool:
    """True when `If-None-Match` names the current entity tag (its opaque part, `tag`), by
    weak comparison, or is `*`: answer 304."""
    if header is None:
        return False
    tags = _parse(header)
    if tags is None:
        return False
    return tags.any or tag in tags.strong or tag in tags.weak
