"""The one thin boundary to the Kubernetes API.

Get, list, apply, patch and status writes for the handlers.
"""
