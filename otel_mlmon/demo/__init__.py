"""``mlmon demo``: the product on one machine, and the native demo stack the end-to-end tests run.

- :mod:`.data`: the demo's churn data (with the injected drift), model and reference profile.
- :mod:`.console`: what the demo prints (legend, one line per window, alert counts).
- :mod:`.run`: ``mlmon demo`` (an embedded processor, no server) and ``mlmon demo --stack``.
- :mod:`.stack`: the docker-compose topology run natively (needs a source checkout).
- :mod:`.kafka`: that stack with Kafka between the Collector and 1 or 2 processors (``mlmon demo --stack --kafka``).
- :mod:`.credentials`: the processor's token and TLS files; :mod:`.ports`: loopback ports.

Imports go one way: ``run`` → ``console`` → ``data``, ``run`` → ``kafka`` → ``stack``, and ``stack`` → ``data``,
``credentials``, ``ports`` (nothing imports ``run``). Importing this package, ``run``, ``stack`` or ``kafka`` imports
the standard library only.
"""
