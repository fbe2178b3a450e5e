"""The forecast edge: reading the latest projection of a budget for people (the CLI)."""
