"""Dagster definitions of geoconcept: jobs, schedules, sensors, resources, executors, partitions."""

import warnings

import dagster as dg

# Backfill policies and partitioned asset checks are marked beta/preview in Dagster 1.13; we use
# them on purpose, and the warnings would drown every CLI run's output.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
