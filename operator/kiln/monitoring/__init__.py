"""Watching a deployed model and closing the loop: drift statistics (`statistics`), the drift
check (`drift`), retraining triggers (`triggers`, cron in `schedule`), storm guards (`guards`), the
TrainingJob a retraining starts (`retraining`), and the plan that puts them together (`plan`).
No I/O, no kopf, no clients: the time comes in, the queries to run go out (`measure`).
"""
