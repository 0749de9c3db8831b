"""ModelDeployment.

The canary, blue-green and shadow state machines and the meaning of analysis measurements, as
pure functions. No I/O, no kopf, no clients.
"""
