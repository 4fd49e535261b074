"""The write side: HTTP endpoints and CLI verbs that validate a request and publish events."""
