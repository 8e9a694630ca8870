"""The labeler: label jobs in, labels out, with bounded calls in flight."""
