"""One module per console page group: sign-in, review, identities, nodes (hub), sync (node)."""
