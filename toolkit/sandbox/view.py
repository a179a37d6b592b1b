"""What the sandbox shows while it runs: events and Slack messages as they happen, and a live
status line (queues, verdicts, alarms) redrawn in place on a terminal, printed every few seconds
as plain lines otherwise."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, TextIO

from toolkit.sandbox.scenario import Event

_COLOURS = {"frozen": "33", "alarm": "31", "pressed": "35", "deployment": "34", "recovered": "32",
            "drained": "32", "resolved": "32", "memory": "33", "timeout": "31"}


class View:
    def __init__(self, out: TextIO, tty: bool, every: float = 5.0) -> None:
        self.out, self.tty, self.every = out, tty, every
        self._status = ""
        self._last_plain = -every
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            if self.tty and self._status:
                self.out.write("\r\x1b[K")
            self.out.write(text + "\n")
            if self.tty and self._status:
                self.out.write(self._status)
            self.out.flush()

    def note(self, line: str) -> None:
        self._print(line)

    def event(self, e: Event) -> None:
        name = f"{e.event:<10}"
        if self.tty and e.event in _COLOURS:
            name = f"\x1b[1;{_COLOURS[e.event]}m{name}\x1b[0m"
        self._print(f"[{e.t:6.1f}s] {name} {e.detail}")

    def slack(self, t: float, posted: Any) -> None:
        where = "  (in thread)" if posted.thread_ts else ""
        lines = [f"[{t:6.1f}s] slack      #sandbox-alerts{where}"]
        lines += [f"           | {line}" for line in posted.plain.splitlines()]
        self._print("\n".join(lines))

    def status(self, t: float, lengths: Mapping[str, int], verdicts: Mapping[str, str],
               alarms: Mapping[str, str]) -> None:
        queues = "  ".join(f"{q} {n:>3}" for q, n in lengths.items())
        judged = "  ".join(f"{s} {v}" for s, v in verdicts.items())
        firing = [a for a, s in alarms.items() if s == "ALARM"]
        line = (f"[{t:6.1f}s] queues: {queues} | verdicts: {judged} | alarms in ALARM: "
                f"{', '.join(firing) or 'none'}")
        if self.tty:
            import shutil

            line = line[:shutil.get_terminal_size((120, 24)).columns - 1]
            with self._lock:
                self._status = line
                self.out.write("\r\x1b[K" + line)
                self.out.flush()
        elif t - self._last_plain >= self.every:
            self._last_plain = t
            self._print(line)

    def close(self) -> None:
        if self.tty and self._status:
            with self._lock:
                self.out.write("\n")
                self._status = ""
                self.out.flush()
