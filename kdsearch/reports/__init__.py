"""Reports built from Parquet alone: method comparisons and the paper's analysis."""

from kdsearch.reports.analysis import anytime, config_means, knob_costs, paired_difference, recommended_rank, regret
from kdsearch.reports.compare import compare

__all__ = ["anytime", "compare", "config_means", "knob_costs", "paired_difference", "recommended_rank", "regret"]
