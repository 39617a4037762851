"""The only asyncpg importer: pool, statements (queries.sql), migrations, LISTEN."""
