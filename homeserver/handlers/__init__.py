"""Handlers: the application's operations, reaching the database only through stores."""
