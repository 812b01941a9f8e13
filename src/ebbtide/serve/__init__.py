"""The live service: events in over HTTP (or a Redis stream), interest state updated on
every event, answers in milliseconds.

`records` checks posted events by the same rules as `ingest`; `wal` makes them durable
before they are acknowledged; `sink` carries them into the DuckDB store; `state` keeps
each user's live interest; `security` checks API keys and limits; `app` puts it together
as a FastAPI application (`ebbtide serve`).
"""
