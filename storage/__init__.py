"""Storage: one async Database over two engines (SQLite, PostgreSQL),
numbered migrations, and the stores. No SQL lives outside this package."""
