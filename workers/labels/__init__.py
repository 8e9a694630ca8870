"""The label store and the box claims: written by the labeler, read by the label API."""
