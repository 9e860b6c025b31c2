"""The offline lab: synthetic data made in code, small models trained on it, and checkers that score them."""
