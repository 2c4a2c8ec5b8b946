"""Models built on the attention layers; each file exports one ``Model`` (found by name)."""
