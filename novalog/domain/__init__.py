"""Pure domain rules: states, allowed transitions, folds of events into state.

Nothing here imports confluent_kafka, psycopg or libvirt (DESIGN.md §2).
"""
