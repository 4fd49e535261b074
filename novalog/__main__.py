"""`python -m novalog` is the `novalog` command (roles are started this way)."""

from novalog.cli import main

main()
