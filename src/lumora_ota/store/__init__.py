"""Persistence: metadata through SQLAlchemy (SQLite or PostgreSQL) and blobs by content hash."""
