"""The API pipeline: what happens to one call of an API route, one module per step.

router and pipeline (pipeline.py) -> authenticate (auth.py) -> the route's scopes and
production's validation (production/) -> a fault (faults.py), a provider limit (ratelimit.py) or
the case the population finds -> masking -> one store step (store/) that counts and journals the
call (journal.py says what a row keeps); transport.py puts production's envelope around the body.

May import: production/, population/, store/, settings. Never the surfaces (tryit/,
franceconnect/, airtable/) nor the application that assembles them.
"""
