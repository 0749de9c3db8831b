"""Seams to outside systems, one protocol each with an explicit registry and an in-memory fake.

Metrics (prometheus, web), traffic (router, gateway-api, replicas), gang scheduling (builtin,
volcano, coscheduling).
"""
