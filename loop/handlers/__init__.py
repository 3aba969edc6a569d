"""The platform's thin layer over the learning engine: the only part of ``learning`` that imports Django.

It turns database rows into arrays and files (cells -> image records, annotations -> label vectors),
calls the engine, and writes the outcome back as ``ModelVersion`` and ``QueryBatch`` rows. Job handlers
live in :mod:`loop.handlers.jobs`; the web side's read-only helpers (similar cells, saliency) in
:mod:`loop.handlers.inference`.
"""
