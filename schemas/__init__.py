"""novalog's event contract: Avro schemas, the single-object codec, the fingerprint registry.

This package imports nothing from the rest of novalog, so any consumer (or an
auditor's script) can decode the log with it alone.
"""

from schemas.codec import Event, SerializationError, decode, encode
from schemas.registry import Registry, default_registry

__all__ = ["Event", "Registry", "SerializationError", "decode", "default_registry", "encode"]
