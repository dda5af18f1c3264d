"""Typed records of the result files every later stage reads back: ``metrics.jsonl``,
``train_summary.json`` and ``eval.json``. (``audit.json`` has its own, in ``audit/report.py``.)

One module per file kind; one shape for all (:class:`~smalltune.schema.base.Record`): declared fields
read by name, unknown keys kept in ``extra``, a ``schema_version`` per file (per line for the metrics
log), older unversioned files read as version 0, a newer major version refused with one line. The
versioning rule is in ``base.py``; the report, the verdicts and the run directory read only through
these records.

>>> from smalltune.schema import read_train_summary
>>> read_train_summary("runs/dental-demo/train_summary.json").best.eval_ppl
"""

from .base import UNVERSIONED, Record, SchemaVersionError, check_version
from .evaluation import (EVAL_SCHEMA, Estimate, EvalResult, EvalSettings, Metric, Sample, Verdict, estimate_at,
                         metric_at, probe_value, read_eval)
from .metrics import (METRICS_SCHEMA, EvalRecord, EventRecord, MetricsLog, OtherRecord, TrainRecord, dumps_metrics,
                      encode_metric, parse_metric, read_metrics)
from .summary import SUMMARY_SCHEMA, DataSummary, SplitStats, TrainSummary, read_train_summary

__all__ = [
    "Record", "SchemaVersionError", "check_version", "UNVERSIONED",
    "METRICS_SCHEMA", "TrainRecord", "EvalRecord", "EventRecord", "OtherRecord", "MetricsLog",
    "parse_metric", "encode_metric", "read_metrics", "dumps_metrics",
    "SUMMARY_SCHEMA", "TrainSummary", "DataSummary", "SplitStats", "read_train_summary",
    "EVAL_SCHEMA", "EvalResult", "EvalSettings", "Verdict", "Sample", "Metric", "Estimate",
    "metric_at", "estimate_at", "probe_value", "read_eval",
]
