"""The read side: the projector (events -> Postgres), query endpoints, replay and audit."""
