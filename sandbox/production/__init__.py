"""Production's rules, as code and as data (data/*.yml), each mirroring a file of siade/.

spec.py loads the OpenAPI specs and compiles each operation; validation_rules.py and
parameter_checks.py are production's parameter checks; errors.py and provider_errors.py its
error bodies; scopes.py which scope a route needs and what it masks; requests.py how it reads a
request id and a Bearer token; retired.py the routes it removed; clock.py its day (Paris).

May import: settings only. Nothing here knows the pipeline, the population or a surface, so a
rule can be read, and tested, alone.
"""
