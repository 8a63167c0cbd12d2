"""kdsearch: hyperparameter search for knowledge distillation of NLP models."""

__version__ = "0.1.0"
