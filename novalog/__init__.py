"""novalog's shared runtime: settings, Kafka plumbing, the dev stack, the CLI."""
