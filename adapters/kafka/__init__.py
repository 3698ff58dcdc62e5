"""The distributed backend's adapter: everything that speaks Kafka.

- :mod:`.codec`, :mod:`.topics`: how the log is laid out on Kafka (topics, partitioning,
  positions, record encoding, checkpoint names).
- :mod:`.clients`: the one way producers are built and consumers are tailed.
- :mod:`.wire`: the command/reply format between API nodes and deciders.
- :mod:`.log`: the deciders' partition log; :mod:`.node`: an API node's side (commands out,
  replies and events in, the read-only replica); :mod:`.bus`: the ephemeral bus.
- :mod:`.deciders`, :mod:`.projectors`, :mod:`.worker`: ``caas worker``.
- :mod:`.tools`: ``caas replay`` and ``caas rebuild`` on the event topic.

It uses what :mod:`streams` shares with the embedded backend (the projector's retry, park and
stall rules); nothing outside this package and the composition root (``api/bootstrap.py``)
imports it.
"""
