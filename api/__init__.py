"""Symptom tracking and alerting for patients on cytokine immunotherapy."""
