"""Change log and sync: changes, hybrid logical clocks, signed change sets."""
