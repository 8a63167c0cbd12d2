"""Recommend a KD config for a new dataset from past searches (He et al. 2021's AutoDistiller)."""

from kdsearch.recommend.features import DatasetFeatures, describe
from kdsearch.recommend.nearest import (
    PastSearches,
    Recommendation,
    leave_one_out,
    load_past,
    recommend,
    regrets,
    search_folders,
)

__all__ = [
    "DatasetFeatures",
    "PastSearches",
    "Recommendation",
    "describe",
    "leave_one_out",
    "load_past",
    "recommend",
    "regrets",
    "search_folders",
]
