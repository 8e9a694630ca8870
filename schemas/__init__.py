"""Pydantic models of every parcelflow topic and the topic registry."""
