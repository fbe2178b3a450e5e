"""Burn-down forecasting: where a budget's consumption lands at its period's end, with bands.

Pure rules (no clock, no I/O). `project.project_period` is the entry point; `advice` turns a
projection into the trend and the recommended action that threshold payloads carry.
"""
