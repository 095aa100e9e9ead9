"""Taskyard broker: owns tasks, leases and schedules; never runs handler code."""

from __future__ import annotations

__version__ = "0.1.0"
