"""The write path and the in-memory state it keeps: committer, ops, dispatcher, ledger."""
