"""Recommend a KD config for a new dataset from past searches (He et al. 2021's AutoDistiller)."""

from kdsearch.recommend.features import FEATURES, DatasetFeatures, describe
from kdsearch.recommend.nearest import (
    PastSearches,
    Recommendation,
    best_on_average,
    feature_ablation,
    leave_one_out,
    load_past,
    loo_summary,
    loo_verdict,
    recommend,
    regrets,
    search_folders,
)

__all__ = [
    "FEATURES",
    "DatasetFeatures",
    "PastSearches",
    "Recommendation",
    "best_on_average",
    "describe",
    "feature_ablation",
    "leave_one_out",
    "load_past",
    "loo_summary",
    "loo_verdict",
    "recommend",
    "regrets",
    "search_folders",
]
