"""Compare experiments across seeds:
``python -m marl.report PATH... [--out DIR] [--marl-eval] [--wandb] [--aggregate]``.

The package, in the order a report is made (each module imports only those above it):

* :mod:`~marl.report.model`: the data classes (``Run``, ``Estimate``, ``Curve``, ``Row``,
  ``EnvTable``, ``Comparison``), imported by everything else;
* :mod:`~marl.report.runs`: finding run folders and reading them back, unfinished ones included;
* :mod:`~marl.report.labels`: readable names of experiments and envs;
* :mod:`~marl.report.stats`: mean, IQM and bootstrap intervals over seeds (rliable);
* :mod:`~marl.report.aggregate`: :func:`compare`, runs grouped per env and experiment;
* :mod:`~marl.report.random_policy` and :mod:`~marl.report.across_tasks` (``--aggregate``): the
  algorithms compared across tasks on per-task normalised scores, a random policy's return as the
  lower reference;
* :mod:`~marl.report.markdown`, :mod:`~marl.report.plot`, :mod:`~marl.report.files`: the tables,
  the curves and the files written;
* :mod:`~marl.report.publish`: the comparison as a W&B Report (``--wandb``);
* :mod:`~marl.report.cli`: the command line (``__main__`` runs it).

The names below are re-exported so that ``from marl import report; report.compare(...)`` works.
"""

from marl.report.aggregate import compare
from marl.report.cli import main, parse_args
from marl.report.files import write_csv, write_marl_eval, write_report, write_runs_csv
from marl.report.markdown import fmt, fmt_estimate, to_markdown
from marl.report.model import METRIC, STATS, Comparison, Curve, EnvTable, Estimate, Row, Run

__all__ = ["METRIC", "STATS", "Comparison", "Curve", "EnvTable", "Estimate", "Row", "Run", "compare", "fmt",
           "fmt_estimate", "main", "parse_args", "to_markdown", "write_csv", "write_marl_eval", "write_report",
           "write_runs_csv"]
