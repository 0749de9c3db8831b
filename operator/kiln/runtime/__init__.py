"""What runs inside pods.

The trainer, the model server and the traffic router. Imports only kiln.api.
"""
