"""The network role (Neutron's part of a boot): IP and MAC allocation per network.

- `ipam.py`: pure pools, allocation and release, rebuilt from the role's own facts
- `role.py`: reads the network topic from the start; facts rebuild the pools, commands
  at or after the group's committed offset are handled
"""
