"""TrainingJob.

Pure plans from a job and its observed pods, nodes and time to the desired workers, services and
status. No I/O, no kopf, no clients.
"""
