"""Datasets: images with ids and original sizes, and an evaluator of COCO-format predictions."""

from fcmbench.datasets.base import Dataset, DatasetItem, DatasetOptions

__all__ = ["Dataset", "DatasetItem", "DatasetOptions"]
