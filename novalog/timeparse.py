"""Moments as operators type them: ISO 8601 (UTC when no zone is given) or relative (-5m)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """'2026-11-22T10:00:00Z', '2026-11-22 10:00', '-5m', '-90s', '-2h', '-1d'."""
    value = text.strip()
    relative = re.fullmatch(r"-(\d+(?:\.\d+)?)([smhd])", value)
    if relative:
        delta = timedelta(**{UNITS[relative.group(2)]: float(relative.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a moment: use ISO 8601 (2026-11-22T10:00:00Z) "
                         "or a relative time like -5m, -2h, -1d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
