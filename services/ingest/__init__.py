"""Ingest: usage from the gateways teams already run, normalised exactly onto `UsageRecorded`."""
