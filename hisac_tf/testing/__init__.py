"""Plain reference implementations that the tests compare the layers
against and the benchmarks time as "before" (reference_*.py): straight
NumPy / TensorFlow code, slow and obviously right."""
