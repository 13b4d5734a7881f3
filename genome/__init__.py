"""What an individual is: source text, id, parents, diffs, the hyperparameter view, three-way merge, validation
against the harness API."""

from genome.constraints import Constraint, Domain, Rules, infer_rules
from genome.diff import PatchError, apply_diff, diff_stats, unified_diff
from genome.harness_api import HARNESS_NAMES, HarnessAPIError, read_harness_api
from genome.hyper import Hyperparameter, format_value, hyperparameters, rewrite, values
from genome.individual import STATUSES, Genome, content_hash, normalise
from genome.lineage import ancestors, lowest_common_ancestor
from genome.merge import Conflict, MergeResult, merge3
from genome.validate import HARNESS_API, Validation, validate

__all__ = [
    "Constraint", "Domain", "Rules", "infer_rules",
    "PatchError", "apply_diff", "diff_stats", "unified_diff",
    "HARNESS_NAMES", "HarnessAPIError", "read_harness_api",
    "Hyperparameter", "format_value", "hyperparameters", "rewrite", "values",
    "STATUSES", "Genome", "content_hash", "normalise",
    "ancestors", "lowest_common_ancestor",
    "Conflict", "MergeResult", "merge3",
    "HARNESS_API", "Validation", "validate",
]
