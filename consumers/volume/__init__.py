"""The volume role: Cinder's volume service (create, delete) over a pluggable backend."""
