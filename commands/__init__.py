"""The application layer: authorise, load state, decide, append, answer."""
