"""Persistence: SQLAlchemy Core tables and the named queries over them."""
