"""HTTP handlers, one module per resource; each parses, calls the domain, serializes."""
