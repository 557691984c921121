"""Tasks behind the entry points: compose nothing, take a resolved config, run, return metrics.

One module per task (``train``, ``evaluate``, ``explain``, ``analyze``), each with a function of the same
concept; ``conf/task/`` names them by their module path (e.g. ``robustxai.tasks.evaluate.evaluate``).
"""
