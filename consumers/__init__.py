"""Stateless reactors, one package per role (scheduler, conductor, compute, network)."""
