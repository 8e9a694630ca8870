"""The embedded Kafka-compatible broker (Tansu) and what it needs to be used exactly."""
