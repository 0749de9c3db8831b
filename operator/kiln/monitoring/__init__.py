"""Drift statistics, retraining triggers and the operator's own metrics. No I/O, no kopf, no
clients.
"""
