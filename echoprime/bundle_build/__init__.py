"""The bundle's last stages without Ray: the anatomical attention (:mod:`.mil`, ``fit-mil``) and
the candidate bank, thresholds, calibration and commit (:mod:`.bank`, ``build-bank``).

The Ray jobs (``ray_jobs/fit_mil.py``, ``ray_jobs/build_bank.py``) embed clips and reports with
actor pools and hand the numpy columns to these functions, which are unit-testable on their own.
"""
