"""The backend's own database: its tables (db) and the queries on them (records)."""
