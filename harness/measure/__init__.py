"""Measurement: plan a preset's videos, score their quality, log them to MLflow."""
