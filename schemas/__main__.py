"""`python -m schemas lock|list|typed`: pin new schema versions, list fingerprints,
regenerate the typed payloads (schemas/payloads.py)."""

from __future__ import annotations

import sys

from schemas.registry import compose_current, lock_current


def main(argv: list[str]) -> int:
    """Lock refuses backward-incompatible changes and exits 1 saying why."""
    if argv[:1] == ["lock"]:
        try:
            changed = lock_current()
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 1
        print("locked: " + (", ".join(changed) if changed else "nothing changed"))
        return 0
    if argv[:1] == ["list"]:
        for name, s in sorted(compose_current().items()):
            print(f"{s.fingerprint_hex}  {s.family:<9} {name}")
        return 0
    if argv[:1] == ["typed"]:
        from schemas.typed import PAYLOADS_FILE, write

        print(f"{PAYLOADS_FILE}: " + ("written" if write() else "up to date"))
        return 0
    print("usage: python -m schemas lock|list|typed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
