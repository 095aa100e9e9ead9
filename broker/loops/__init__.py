"""The broker's background loops, one responsibility each, run under the supervisor."""
