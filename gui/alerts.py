"""The alerts firing now across the cluster, kept from the stream's ``alert`` events (no Qt).

agentd (and a relay, for stale nodes) evaluates the health rules; the app only keeps what is
active: an ``alert`` event with state ``firing`` adds, ``cleared`` removes. A node's snapshot
replaces everything known about that node's alerts (late joiners and reconnects).
"""

from __future__ import annotations

from collections.abc import Iterable

from agentd.protocol.alerts import Alert, alert_from_data
from agentd.protocol.jobs import Event

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class ActiveAlerts:
    """Active alerts keyed by (rule, node, subject); ``version`` grows on every change."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], Alert] = {}
        self._new: list[Alert] = []  # fired by events since take_new(): what to notify about
        self.version = 0

    def clear(self) -> None:
        self._by_key.clear()
        self._new.clear()
        self.version += 1

    def take_new(self) -> list[Alert]:
        """Alerts that began firing (by an event, not a snapshot) since the last call."""
        new, self._new = self._new, []
        return [a for a in new if a.key in self._by_key]

    def apply(self, event: Event) -> tuple[Alert, str] | None:
        """Take one event; the (alert, state) it carried when it was an alert event."""
        if event.kind != "alert":
            return None
        parsed = alert_from_data(event.data)
        if parsed is None:
            return None
        alert, state = parsed
        if state == "firing":
            if alert.key not in self._by_key:
                self._new.append(alert)
            self._by_key[alert.key] = alert
        elif self._by_key.pop(alert.key, None) is None:
            return parsed  # cleared an alert we never saw firing (joined late): nothing to drop
        self.version += 1
        return parsed

    def replace_node(self, node: str, alerts: Iterable[Alert]) -> None:
        """What a node's snapshot says is active there now."""
        for key in [k for k in self._by_key if k[1] == node]:
            del self._by_key[key]
        for alert in alerts:
            self._by_key[alert.key] = alert
        self.version += 1

    def forget_node(self, node: str) -> None:
        self.replace_node(node, ())

    def sorted(self) -> list[Alert]:
        """Most severe first, then oldest first."""
        return sorted(self._by_key.values(), key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.since_s, a.key))

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITY_ORDER, 0)
        for alert in self._by_key.values():
            counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    def of_node(self, node: str) -> list[Alert]:
        return [a for a in self._by_key.values() if a.node == node]

    def __len__(self) -> int:
        return len(self._by_key)
