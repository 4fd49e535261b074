"""nova-conductor: `manager.py` holds the decisions, `role.py` runs them on the log."""
