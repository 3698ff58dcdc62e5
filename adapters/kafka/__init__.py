"""The distributed backend's adapter: everything that speaks Kafka."""
