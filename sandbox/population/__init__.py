"""The people the sandbox answers with: fixture files, runtime personas and how a call finds one.

files.py reads one case file; fixtures.py loads the folders and indexes them; served.py is the
set being served, swapped when the folders change;
lookup.py is the key a case is found under; calls.py the call a client makes for a case;
reachability.py whether production's validation lets any call reach a case; dates.py relative
dates; runtime.py personas created at run time (kept in the store), submitted.py how a new one
is checked; scaffold.py writes new cases
and the staging export.

May import: production/, store/, settings. Never api/ nor the surfaces.
"""
