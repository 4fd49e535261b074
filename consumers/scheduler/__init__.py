"""nova-scheduler: filters and weighers over a host view folded from the log.

- `host_state.py`: what the scheduler knows of each host (pure fold of host facts and placements)
- `request_spec.py`: what the request asks for
- `filters/`, `weighers/`: Nova's filter scheduler, one module per filter / weigher
- `manager.py`: select_destination(), pure
- `role.py`: the `scheduler` role that consumes requests and publishes decisions
"""
