"""Health alerts on the wire: what a rule found, on which node and subject, since when.

An alert's firing and clearing each travel as an ``Event`` of kind ``"alert"`` whose ``data``
is the alert (``alert_event``), so recordings and the event log carry them like any other
event; the ``alerts`` request answers the ones active now.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

AlertState = Literal["firing", "cleared"]


class Alert(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One rule firing for one subject (``"node"``, ``"gpu 3"``, ``"job gpu-a.42"``)."""

    rule: str
    node: str
    subject: str
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str
    since_s: float  # wall time the condition began (or the counter grew)
    evidence: dict[str, float | str] = {}

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies an alert across its firing and clearing."""
        return (self.rule, self.node, self.subject)


def alert_data(alert: Alert, state: AlertState) -> dict[str, Any]:
    """The ``data`` of the ``"alert"`` event announcing ``state`` for ``alert``."""
    data: dict[str, Any] = msgspec.to_builtins(alert)
    data["state"] = state
    return data


def alert_from_data(data: dict[str, Any]) -> tuple[Alert, AlertState] | None:
    """The alert and its state carried by an ``"alert"`` event; None when it is malformed."""
    fields = {k: v for k, v in data.items() if k != "state"}
    state = data.get("state")
    if state not in ("firing", "cleared"):
        return None
    try:
        return msgspec.convert(fields, Alert), state
    except msgspec.ValidationError:
        return None
