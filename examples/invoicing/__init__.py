"""The invoicing example: the system eskit sets out to build, small enough to read."""
