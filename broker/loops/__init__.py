"""The broker's long-running parts, one responsibility each."""
