"""Kombu's Redis binding entries, parsed as kombu writes them.

Kombu's Redis transport records each binding as a member of the set
``{global_keyprefix}_kombu.binding.{exchange}``::

    member = routing_key + sep + pattern + sep + queue

For Celery's queues (direct exchanges) the routing key and the queue are the same name and the
pattern is empty, so the entry of queue ``q`` is ``q + sep + sep + q``. Both the routing key and the
queue may hold the separator themselves (``sep=':'`` and a queue ``emails:eu``), so splitting
on every separator and taking the last piece invents queues; :func:`split_binding` tries every
way the entry can be cut in three and prefers the one kombu would have written for a direct
binding. An entry that cannot be cut in three with the configured separator, or that reads as
a direct binding only with another separator, was written with another ``sep``: that is a
misconfiguration, which :func:`scan_bindings` reports with the separator it likely is.

Pure functions over text; no Redis here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_SPLITS = 64  # a name with more separators than this is cut at the first two


@dataclass(frozen=True)
class Binding:
    routing_key: str
    pattern: str
    queue: str


@dataclass(frozen=True)
class BindingScan:
    """What a set of binding entries says: the queues, and the entries that did not parse."""

    queues: tuple[str, ...]
    unsplit: tuple[str, ...] = ()  # entries written with another separator
    likely_separator: str | None = None  # the separator those entries split with, if one does


def _positions(member: str, sep: str) -> list[int]:
    out: list[int] = []
    at = member.find(sep)
    while at != -1 and len(out) <= MAX_SPLITS:
        out.append(at)
        at = member.find(sep, at + 1)
    return out


def split_binding(member: str, sep: str) -> Binding | None:
    """``member`` cut as kombu writes it, or None when it does not hold two separators.

    Of all the cuts, a direct binding (routing key = queue, pattern empty or the same) wins,
    then one whose routing key is the queue; otherwise the first two separators delimit the
    routing key and the pattern (fanout and topic bindings: their keys rarely hold the
    separator, queues may).
    """
    if not sep:
        return None
    k = len(sep)
    positions = _positions(member, sep)
    cuts = [
        Binding(member[:i], member[i + k:j], member[j + k:])
        for n, i in enumerate(positions) for j in positions[n + 1:] if j >= i + k
    ]
    if not cuts:
        return None
    direct = [b for b in cuts if is_direct(b)]
    if direct:
        return direct[0]
    keyed = [b for b in cuts if b.routing_key == b.queue]
    return keyed[0] if keyed else cuts[0]


def direct_separator(member: str) -> str | None:
    """The separator ``s`` for which ``member`` is a direct binding, ``q + s + s + q`` (as kombu
    writes Celery's queues) or ``q + s + q + s + q``: the shortest such ``s``, else None."""
    size = len(member)
    for n in range((size - 2) // 2, 0, -1):
        queue = member[:n]
        if not member.endswith(queue):
            continue
        middle = member[n:size - n]
        half = len(middle) // 2
        if half and len(middle) % 2 == 0 and middle[:half] == middle[half:]:
            return middle[:half]
        rest = size - 3 * n
        if rest > 0 and rest % 2 == 0:
            sep = member[n:n + rest // 2]
            if member == queue + sep + queue + sep + queue:
                return sep
    return None


def is_direct(binding: Binding) -> bool:
    return binding.routing_key == binding.queue and binding.pattern in ("", binding.queue)


def scan_bindings(members: Iterable[str], sep: str) -> BindingScan:
    """The queues named by ``members``; entries written with another separator are set apart
    (never turned into queues), with the separator they split with when one is found."""
    queues: dict[str, None] = {}
    unsplit: list[str] = []
    guesses: dict[str, int] = {}
    for member in members:
        binding = split_binding(member, sep)
        other = None if binding is not None and is_direct(binding) else direct_separator(member)
        if binding is None or (other is not None and other != sep):
            unsplit.append(member)
            if other is not None:
                guesses[other] = guesses.get(other, 0) + 1
            continue
        if binding.queue:
            queues[binding.queue] = None
    likely = max(guesses, key=lambda s: guesses[s]) if guesses else None
    return BindingScan(tuple(sorted(queues)), tuple(sorted(unsplit)), likely)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, control characters as ``\\uXXXX``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def mismatch_message(scan: BindingScan, sep: str, default_sep: str) -> str:
    """One line naming the setting to fix, for a scan with entries that did not split."""
    count = len(scan.unsplit)
    example = scan.unsplit[0].encode("unicode_escape").decode("ascii")
    head = (f"{count} kombu binding entr{'y does' if count == 1 else 'ies do'} not split with "
            f"separator {toml_string(sep)} as kombu writes them (e.g. '{example}')")
    if scan.likely_separator is None:
        return (f"{head}: set [broker] separator to the workers' broker_transport_options "
                f"'sep'")
    if scan.likely_separator == default_sep:
        fix = "remove separator from [broker] (the workers use kombu's default)"
    else:
        fix = f"set [broker] separator = {toml_string(scan.likely_separator)}"
    return f"{head}; the workers use separator {toml_string(scan.likely_separator)}: {fix}"
