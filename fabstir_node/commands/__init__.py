"""Operator commands behind ``fabstir-node publish`` and ``fabstir-node search``."""
