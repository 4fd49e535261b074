"""How volume facts change the projection: the pure fold (novalog/domain/volume.py),
then the volume's row, its attachments and its event, in the projector's transaction.

Each event is applied once (volume_events, first wins by event id). A volume's
row is read back from `state`, folded, and written whole; a deleted volume's row
and attachments go, its events stay (time travel and audit read them).
"""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from novalog.domain import volume as fold
from schemas import Event


def project_volume_event(conn: Connection[Any], event: Event, raw: bytes) -> None:
    """Commands on the volumes topic (none yet) and unknown types change nothing."""
    if event.event_type not in fold.FOLDED:
        return
    if conn.execute("SELECT 1 FROM volume_events WHERE event_id = %s",
                    (event.event_id,)).fetchone() is not None:
        return
    row = conn.execute("SELECT state FROM volumes WHERE volume_id = %s FOR UPDATE",
                       (event.aggregate_id,)).fetchone()
    before = fold.from_json(row[0]) if row else None
    if before is None and conn.execute("SELECT 1 FROM volume_events WHERE volume_id = %s",
                                       (event.aggregate_id,)).fetchone() is not None:
        status = fold.DELETED  # deleted already: a late or repeated fact changes nothing
    else:
        after = fold.apply(before, event)  # TransitionError: dead-lettered, nothing written
        status = after.status
        _write(conn, after)
    conn.execute(
        "INSERT INTO volume_events (event_id, volume_id, event_type, occurred_at, status, "
        "producer, request_id, raw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (event.event_id, event.aggregate_id, event.event_type, event.occurred_at,
         status, event.producer, event.correlation_id, raw))


def _write(conn: Connection[Any], v: fold.Volume) -> None:
    conn.execute("DELETE FROM volume_attachments WHERE volume_id = %s", (v.volume_id,))
    if v.status == fold.DELETED:
        conn.execute("DELETE FROM volumes WHERE volume_id = %s", (v.volume_id,))
        return
    conn.execute(
        """INSERT INTO volumes (volume_id, project_id, user_id, name, description, size_gb,
            status, volume_type, availability_zone, image_id, bootable, metadata, connection,
            reason, created_at, updated_at, state)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (volume_id) DO UPDATE SET name = excluded.name,
            description = excluded.description, size_gb = excluded.size_gb,
            status = excluded.status, bootable = excluded.bootable,
            metadata = excluded.metadata, connection = excluded.connection,
            reason = excluded.reason, updated_at = excluded.updated_at, state = excluded.state""",
        (v.volume_id, v.project_id, v.user_id, v.name, v.description, v.size_gb, v.status,
         v.volume_type, v.availability_zone, v.image_id, v.bootable, Jsonb(v.metadata),
         Jsonb(v.connection) if v.connection else None, v.reason, v.created_at,
         v.updated_at, Jsonb(fold.to_json(v))))
    for a in v.attachments:
        conn.execute(
            "INSERT INTO volume_attachments (attachment_id, volume_id, instance_uuid, "
            "attach_status, host, device, attached_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (a.attachment_id, v.volume_id, a.instance_uuid, a.attach_status, a.host, a.device,
             a.attached_at))
