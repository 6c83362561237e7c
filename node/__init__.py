"""The district node: the MPI API on an embedded SQLite database."""
