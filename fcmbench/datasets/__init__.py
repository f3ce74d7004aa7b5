"""Datasets: images with ids and original sizes, and an evaluator of COCO-format predictions."""
