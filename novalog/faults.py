"""Faults a test can inject through the environment, listed in one place.

NOVALOG_TEST_FAULTS="refuse_claim@cmp1,fail_spawn@cmp2" makes the compute agent
of cmp1 refuse every claim and the one of cmp2 fail every spawn. Tests use this
to force reschedules without depending on timing. Production never sets it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

FAULTS = {
    "refuse_claim": "the compute agent refuses every claim, as if the host were full",
    "fail_spawn": "the compute agent's spawn step fails (retryable), after disks are made",
}


def active(fault: str, host: str, env: Mapping[str, str] | None = None) -> bool:
    """True when `fault` is injected for `host`."""
    if fault not in FAULTS:
        raise KeyError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    spec = (os.environ if env is None else env).get("NOVALOG_TEST_FAULTS", "")
    return f"{fault}@{host}" in {item.strip() for item in spec.split(",")}
