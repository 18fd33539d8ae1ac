"""Airtable sync: edit the virtual population in a spreadsheet, both ways, losing nothing.

One table per fixture folder (named after the operation's x-operationId; `france_connect` for
the FranceConnect tokens), one record per case file. The layout and its type-preserving cell
encoding are described in docs/airtable.md; in short:

  case           the file name stem: the stable key upserts merge on
  status         an integer cell
  a.b.c          one text cell per scalar at that dotted path (`params.ine`, `payload.data.email`);
                 lists, empty mappings and mappings whose keys cannot be columns are JSON text
  _types         a JSON object naming the type of every cell that is not a plain non-empty string
                 ("int", "float", "bool", "null", "date", "datetime", "json", "yaml", "str" for "")

A pull never half-writes: every changed folder is staged beside the target, checked with the
sandbox's own fixture loader, then swapped in by rename. A file whose content did not change
keeps its bytes (and comments), so a push followed by a pull leaves the folder identical.

The package, one focused module per part (each says what it is and why):

  common   SyncError, SetupError, token scrubbing, type-strict equality
  cells    a case document <-> one record's fields (the encoding above)
  files    case files: read as the sandbox does, render in normal form, list
  client   the throttled pyairtable client, its errors for people, progress, the schema read
  push     the table layout, `airtable init` and `airtable push`
  pull     `airtable pull`: fetch, plan, stage, validate, swap in, diff
  sync     `serve --airtable-sync`: Syncer and start_sync

pyairtable is imported lazily (client.py): it is slow to import and only the sync needs it. Import
what you need from its module (`from sandbox.airtable.pull import pull`): this file exports nothing.

May import: production/, population/, settings; never api/ nor the application.
"""
