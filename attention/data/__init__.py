"""Tasks and data: generators, file readers and the input pipeline (NumPy only, no Flax)."""
