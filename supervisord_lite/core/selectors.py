"""Which services a command-line word selects: a service, a tier, or a group.

Every command that takes services (``up``, ``down``, ``restart``, ``status``, ``logs``,
``ports``, ``signal``, ``run --needs``) reads its words through ``resolve``:

    NAME           the service NAME, or every service of the tier NAME
    @GROUP         every service whose ``groups`` lists GROUP
    service:NAME   the service NAME, even when a tier has that name too
    tier:NAME      every service of the tier NAME, even when a service has that name too

A bare word that names both a service and a tier is refused (``AmbiguousSelector``)
with the two spellings that pick one, unless the tier holds that service alone (both
readings then select the same); an unknown word gets a did-you-mean
(``UnknownSelector``). Pure: a manifest in, service names out.
"""

from __future__ import annotations

from collections.abc import Iterable

from supervisord_lite.core.model import Manifest

GROUP_PREFIX = "@"
SERVICE_PREFIX = "service:"
TIER_PREFIX = "tier:"


class SelectorError(ValueError):
    """A word that selects nothing or more than one thing; ``str()`` is the message."""


class AmbiguousSelector(SelectorError):
    pass


class UnknownSelector(SelectorError):
    pass


def group_names(manifest: Manifest) -> list[str]:
    """Every group some service lists, in order of first mention."""
    return list(dict.fromkeys(g for spec in manifest.services.values() for g in spec.groups))


def resolve(manifest: Manifest, words: Iterable[str], *, startable: bool = False) -> list[str]:
    """The service names the words select, each once, in the manifest's order.

    With ``startable``, a tier or group contributes only its active services (``svc up
    backend`` starts what can start; a disabled member is not an error), while a service
    named on its own is kept whatever its status, so the caller's own refusal explains it.

    :raises SelectorError: a word is unknown, ambiguous, or selects no service.
    """
    chosen: set[str] = set()
    for word in words:
        chosen.update(_one(manifest, word, startable))
    return [name for name in manifest.services if name in chosen]


def _one(manifest: Manifest, word: str, startable: bool) -> list[str]:
    is_service = word in manifest.services
    is_tier = word in manifest.tiers
    if is_service and is_tier and not _same_either_way(manifest, word):
        raise AmbiguousSelector(
            f'"{word}" is both a service and a tier in {manifest.path}: '
            f'write "{SERVICE_PREFIX}{word}" for the service or "{TIER_PREFIX}{word}" for the tier'
        )
    if is_service:
        return [word]
    if is_tier:
        return _tier(manifest, word, startable)
    if word.startswith(GROUP_PREFIX):
        return _group(manifest, word[len(GROUP_PREFIX) :], startable)
    if word.startswith(SERVICE_PREFIX):
        name = word[len(SERVICE_PREFIX) :]
        if name not in manifest.services:
            raise UnknownSelector(f'no service named "{name}" in {manifest.path}{_hint(name, manifest.services)}')
        return [name]
    if word.startswith(TIER_PREFIX):
        name = word[len(TIER_PREFIX) :]
        if name not in manifest.tiers:
            raise UnknownSelector(f'no tier named "{name}" in {manifest.path}{_hint(name, manifest.tiers)}')
        return _tier(manifest, name, startable)
    raise UnknownSelector(_unknown_bare(manifest, word))


def _same_either_way(manifest: Manifest, word: str) -> bool:
    """The service ``word`` is all its tier of the same name holds (``web`` in tier ``web``):
    both readings select the same, so the word is not ambiguous."""
    return {s.name for s in manifest.services.values() if s.tier == word} <= {word}


def _tier(manifest: Manifest, tier: str, startable: bool) -> list[str]:
    members = [s.name for s in manifest.services.values() if s.tier == tier and (s.is_active or not startable)]
    if not members:
        what = "active service" if startable else "service"
        raise UnknownSelector(f'tier "{tier}" of {manifest.path} has no {what}')
    return members


def _group(manifest: Manifest, group: str, startable: bool) -> list[str]:
    groups = group_names(manifest)
    if group not in groups:
        message = f'no group named "{group}" in {manifest.path}'
        if group in manifest.services or group in manifest.tiers:
            kind = "service" if group in manifest.services else "tier"
            message += f' ("{group}" is a {kind}: write it without "{GROUP_PREFIX}")'
        elif groups:
            message += _hint(group, groups, prefix=GROUP_PREFIX) or f" (groups: {', '.join(groups)})"
        else:
            message += " (no service lists any groups)"
        raise UnknownSelector(message)
    members = [s.name for s in manifest.services.values() if group in s.groups and (s.is_active or not startable)]
    if not members:
        raise UnknownSelector(f'group "{group}" of {manifest.path} has no active service')
    return members


def _unknown_bare(manifest: Manifest, word: str) -> str:
    said = f'no service named "{word}" in {manifest.path} (nor a tier)'
    if word in group_names(manifest):
        return f'{said}; "{word}" is a group: write "{GROUP_PREFIX}{word}"'
    choices = [*manifest.services, *manifest.tiers, *(GROUP_PREFIX + g for g in group_names(manifest))]
    return f"{said}{_hint(word, choices)}"


def _hint(word: str, choices: Iterable[str], prefix: str = "") -> str:
    import difflib  # lazy: only a typo needs it

    close = difflib.get_close_matches(prefix + word, [prefix + c if prefix else c for c in choices], n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""
