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

pyairtable is imported lazily (client.py): it is slow to import and only the sync needs it, while
the sandbox imports this package at start-up for start_sync.
"""
from __future__ import annotations

from .common import SetupError, SyncError, same, scrub
from .cells import CASE, KINDS, STATUS, TOP_ORDER, TYPES, column_order, from_record, to_record
from .files import CASE_SUFFIXES, FRANCE_CONNECT, case_files, read_case, render, synced_folders
from .client import (BACKOFF, DEFAULT_ENDPOINT, PAGE_SIZE, RATE, RETRIES, connect, describe,
                     read_schema, talking_to_airtable)
# `push` and `pull` name both a module of this package and its main function: these imports load
# the modules first, then bind the names to the functions, which is what callers use.
from .push import BATCH, TablePlan, ensure_layout, field_spec, init, layout, local_records, plan_table, push
from .pull import (CASE_NAME, FolderPlan, PullResult, fetch, plan_folder, pull, stage, swap_in,
                   unified_diff, validate)
from .sync import Syncer, logger, start_sync

__all__ = [
    "SyncError", "SetupError", "scrub", "same",
    "CASE", "TYPES", "STATUS", "KINDS", "TOP_ORDER", "to_record", "from_record", "column_order",
    "FRANCE_CONNECT", "CASE_SUFFIXES", "read_case", "render", "case_files", "synced_folders",
    "DEFAULT_ENDPOINT", "RATE", "RETRIES", "BACKOFF", "PAGE_SIZE",
    "connect", "describe", "talking_to_airtable", "read_schema",
    "BATCH", "field_spec", "layout", "TablePlan", "local_records", "ensure_layout", "init", "plan_table", "push",
    "CASE_NAME", "FolderPlan", "fetch", "plan_folder", "validate", "stage", "swap_in", "PullResult",
    "unified_diff", "pull",
    "Syncer", "logger", "start_sync",
]
