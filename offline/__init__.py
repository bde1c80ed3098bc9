"""offerd offline pipeline: synthetic world, CLV, cohorts, uplift, two-tower, evaluation, export.

Run a job with ``/usr/bin/python3 -m offline <job> --help``.
"""
