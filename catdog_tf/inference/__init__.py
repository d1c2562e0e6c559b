"""Predict, evaluate, ensemble and export: everything that runs a trained model."""
