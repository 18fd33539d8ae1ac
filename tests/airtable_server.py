"""A small Airtable-compatible HTTP server for the tests: the real pyairtable client talks to it
through `endpoint_url`, so the sync code runs exactly as it would against api.airtable.com.

It implements what pyairtable calls (list with `offset` pagination, create, update, upsert on
`performUpsert.fieldsToMergeOn`, delete, the meta API for tables and fields), checks the bearer
token and the field names and values the way Airtable does (401, 422 bodies), and has fault
switches: a 429 on every Nth call, a connection cut in the middle of a list answer, a 422 on writes.
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE_SIZE_MAX = 100
BATCH_MAX = 10
TEXT_TYPES = {"singleLineText", "multilineText", "email", "url", "phoneNumber", "richText"}
FIELD_TYPES = TEXT_TYPES | {"number", "checkbox"}


class ApiError(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.body = status, {"error": {"type": kind, "message": message}}


class Table:
    def __init__(self, table_id, name, description=None):
        self.id, self.name, self.description = table_id, name, description
        self.fields = []                # [{"id", "name", "type", "options"?}] in column order
        self.records = {}               # record id -> {"id", "createdTime", "fields"}

    def schema(self):
        return {"id": self.id, "name": self.name, "description": self.description,
                "primaryFieldId": self.fields[0]["id"], "fields": self.fields,
                "views": [{"id": "viw" + self.id[3:], "name": "Grid view", "type": "grid"}]}

    def field(self, name):
        return next((f for f in self.fields if f["name"] == name), None)


class AirtableState:
    """The bases, and the fault switches the tests flip."""

    def __init__(self, token):
        self.token = token
        self.bases = {}                 # base id -> {table name: Table}
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.calls = []                 # (monotonic time, method, path) of every authenticated call
        self.max_batch = 0
        self.throttled = 0              # 429s answered
        self.list_calls = 0
        # fault switches
        self.rate_limit_every = 0       # answer 429 to every Nth call
        self.rate_limit_always = False  # a 429 storm
        self.drop_lists_after = None    # cut the connection in the middle of every list call after N
        self.reject_writes = False      # answer 422 to every record write

    def new_id(self, prefix):
        return f"{prefix}{next(self._ids):014d}"

    def create_base(self, base_id):
        with self.lock:
            self.bases.setdefault(base_id, {})
        return base_id

    # --- helpers for the tests: read and edit what a person would see in the spreadsheet ------
    def table(self, base_id, name) -> Table:
        return self.bases[base_id][name]

    def records(self, base_id, table_name) -> list:
        with self.lock:
            return [json.loads(json.dumps(r)) for r in self.table(base_id, table_name).records.values()]

    def find(self, base_id, table_name, case) -> dict:
        return next(r for r in self.table(base_id, table_name).records.values() if r["fields"].get("case") == case)

    def add(self, base_id, table_name, **cells) -> str:
        """A new row, as a person starts one in the grid."""
        with self.lock:
            record = {"id": self.new_id("rec"), "createdTime": "2026-01-01T00:00:00.000Z", "fields": cells}
            self.table(base_id, table_name).records[record["id"]] = record
            return record["id"]

    def edit(self, base_id, table_name, case, /, **cells):
        """Change cells of the record whose `case` is `case`, as a person would in the grid."""
        with self.lock:
            record = self.find(base_id, table_name, case)
            for name, value in cells.items():
                if value is None or value == "":
                    record["fields"].pop(name, None)
                else:
                    record["fields"][name] = value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeAirtable/1.0"

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def setup(self):
        super().setup()
        # no Nagle: with delayed ACKs every small answer would wait 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def state(self) -> AirtableState:
        return self.server.state

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def _send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop_midway(self, body):
        """Send the headers and half of the body, then cut the connection."""
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        state = self.state
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            return self._send(401, {"error": {"type": "AUTHENTICATION_REQUIRED",
                                              "message": "Authentication required"}})
        with state.lock:
            state.calls.append((time.monotonic(), method, url.path))
            count = len(state.calls)
            if state.rate_limit_always or (state.rate_limit_every and count % state.rate_limit_every == 0):
                state.throttled += 1
                return self._send(429, {"errors": [{"error": "RATE_LIMIT_REACHED",
                                                    "message": "Rate limit exceeded. Please try again later"}]})
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(422, {"error": {"type": "INVALID_REQUEST_BODY", "message": "Could not parse body"}})
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        try:
            with state.lock:
                status, answer, drop = self._route(method, parts, query, body)
        except ApiError as exc:
            return self._send(exc.status, exc.body)
        if drop:
            return self._drop_midway(answer)
        return self._send(status, answer)

    # --- routing ------------------------------------------------------------------------------
    def _route(self, method, parts, query, body):
        if parts[:1] != ["v0"]:
            raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
        if parts[1:3] == ["meta", "bases"] and len(parts) >= 5 and parts[4] == "tables":
            tables = self._base(parts[3])
            if len(parts) == 5 and method == "GET":
                return 200, {"tables": [t.schema() for t in tables.values()]}, False
            if len(parts) == 5 and method == "POST":
                return 200, self._create_table(parts[3], tables, body), False
            if len(parts) == 7 and parts[6] == "fields" and method == "POST":
                return 200, self._create_field(self._table(tables, parts[5]), body), False
            raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
        if len(parts) in (3, 4):
            table = self._table(self._base(parts[1]), parts[2])
            if len(parts) == 4 and parts[3] == "listRecords" and method == "POST":
                return self._list(table, body)
            if len(parts) == 3 and method == "GET":
                options = {k: (v if k.endswith("[]") else v[0]) for k, v in query.items()}
                return self._list(table, options)
            if len(parts) == 3 and method == "POST":
                return 200, self._create(table, body), False
            if len(parts) == 3 and method in ("PATCH", "PUT"):
                return 200, self._update(table, body, replace=method == "PUT"), False
            if len(parts) == 3 and method == "DELETE":
                return 200, self._delete(table, query.get("records[]", [])), False
        raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")

    def _base(self, base_id):
        if base_id not in self.state.bases:
            raise ApiError(403, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
                           "Invalid permissions, or the requested model was not found.")
        return self.state.bases[base_id]

    def _table(self, tables, id_or_name):
        for table in tables.values():
            if id_or_name in (table.id, table.name):
                return table
        raise ApiError(404, "TABLE_NOT_FOUND", f"Could not find table {id_or_name} in application")

    # --- meta API -----------------------------------------------------------------------------
    def _check_field_spec(self, spec, taken):
        name, kind = spec.get("name"), spec.get("type")
        if not isinstance(name, str) or not name.strip() or name.lower() in taken:
            raise ApiError(422, "DUPLICATE_OR_EMPTY_FIELD_NAME", f"Field name {name!r} is empty or taken")
        if kind not in FIELD_TYPES:
            raise ApiError(422, "INVALID_FIELD_TYPE", f"Unsupported field type {kind!r}")
        if kind == "number" and not isinstance((spec.get("options") or {}).get("precision"), int):
            raise ApiError(422, "INVALID_FIELD_TYPE_OPTIONS", "number fields need options.precision")
        field = {"id": self.state.new_id("fld"), "name": name, "type": kind}
        if spec.get("options"):
            field["options"] = spec["options"]
        return field

    def _create_table(self, base_id, tables, body):
        name = body.get("name")
        if not isinstance(name, str) or not name or name in tables:
            raise ApiError(422, "DUPLICATE_TABLE_NAME", f"Table name {name!r} is empty or taken")
        if not body.get("fields"):
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "A table needs at least one field")
        table = Table(self.state.new_id("tbl"), name, body.get("description"))
        for spec in body["fields"]:
            table.fields.append(self._check_field_spec(spec, {f["name"].lower() for f in table.fields}))
        tables[name] = table
        return table.schema()

    def _create_field(self, table, body):
        field = self._check_field_spec(body, {f["name"].lower() for f in table.fields})
        table.fields.append(field)
        return field

    # --- records ------------------------------------------------------------------------------
    @staticmethod
    def _visible(record):
        """Airtable leaves empty cells out of what it returns."""
        fields = {k: v for k, v in record["fields"].items() if v not in (None, "", False, [])}
        return {"id": record["id"], "createdTime": record["createdTime"], "fields": fields}

    def _list(self, table, options):
        page_size = int(options.get("pageSize") or PAGE_SIZE_MAX)
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise ApiError(422, "INVALID_PAGE_SIZE", f"pageSize must be 1..{PAGE_SIZE_MAX}")
        records = list(table.records.values())
        offset = options.get("offset")
        start = 0
        if offset:
            if not str(offset).startswith("itr"):
                raise ApiError(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "Invalid offset")
            start = int(str(offset)[3:])
        page = records[start:start + page_size]
        answer = {"records": [self._visible(r) for r in page]}
        if start + page_size < len(records):
            answer["offset"] = f"itr{start + page_size}"
        self.state.list_calls += 1
        after = self.state.drop_lists_after
        return 200, answer, after is not None and self.state.list_calls > after

    def _check_batch(self, body):
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise ApiError(422, "INVALID_RECORDS", "records must be a non-empty array")
        self.state.max_batch = max(self.state.max_batch, len(records))
        if len(records) > BATCH_MAX:
            raise ApiError(422, "INVALID_RECORDS", f"at most {BATCH_MAX} records per request")
        if self.state.reject_writes:
            raise ApiError(422, "INVALID_VALUE_FOR_COLUMN", 'Field "description" cannot accept the provided value')
        return records

    def _check_cells(self, table, fields):
        for name, value in fields.items():
            field = table.field(name)
            if field is None:
                raise ApiError(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
            if value is None:
                continue
            ok = (isinstance(value, str) if field["type"] in TEXT_TYPES else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if field["type"] == "number"
                  else isinstance(value, bool))
            if not ok:
                raise ApiError(422, "INVALID_VALUE_FOR_COLUMN",
                               f'Field "{name}" cannot accept the provided value')

    def _create(self, table, body):
        records = self._check_batch(body)
        for record in records:
            self._check_cells(table, record.get("fields") or {})
        created = []
        for record in records:
            new = {"id": self.state.new_id("rec"), "createdTime": "2026-01-01T00:00:00.000Z",
                   "fields": dict(record.get("fields") or {})}
            table.records[new["id"]] = new
            created.append(self._visible(new))
        return {"records": created}

    def _update(self, table, body, replace):
        records = self._check_batch(body)
        merge_on = (body.get("performUpsert") or {}).get("fieldsToMergeOn")
        targets = []
        for record in records:
            fields = record.get("fields") or {}
            self._check_cells(table, fields)
            if "id" in record:
                if record["id"] not in table.records:
                    raise ApiError(404, "NOT_FOUND", f"Record {record['id']} not found")
                targets.append((table.records[record["id"]], fields))
            elif merge_on:
                if any(name not in fields for name in merge_on):
                    raise ApiError(422, "INVALID_VALUE_FOR_COLUMN", "every record needs the fieldsToMergeOn")
                matches = [r for r in table.records.values()
                           if all(r["fields"].get(n) == fields[n] for n in merge_on)]
                if len(matches) > 1:
                    raise ApiError(422, "INVALID_VALUE_FOR_COLUMN", "several records match fieldsToMergeOn")
                targets.append((matches[0] if matches else None, fields))
            else:
                raise ApiError(422, "INVALID_RECORDS", "each record needs an id")
        answer = {"records": [], "createdRecords": [], "updatedRecords": []}
        for existing, fields in targets:
            if existing is None:
                existing = {"id": self.state.new_id("rec"), "createdTime": "2026-01-01T00:00:00.000Z", "fields": {}}
                table.records[existing["id"]] = existing
                answer["createdRecords"].append(existing["id"])
            else:
                answer["updatedRecords"].append(existing["id"])
            if replace:
                existing["fields"] = {}
            existing["fields"].update(fields)
            answer["records"].append(self._visible(existing))
        return answer

    def _delete(self, table, ids):
        if not ids or len(ids) > BATCH_MAX:
            raise ApiError(422, "INVALID_RECORDS", f"1..{BATCH_MAX} records per request")
        if self.state.reject_writes:
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "Cannot delete these records")
        missing = [i for i in ids if i not in table.records]
        if missing:
            raise ApiError(404, "NOT_FOUND", f"Record {missing[0]} not found")
        for record_id in ids:
            del table.records[record_id]
        return {"records": [{"id": i, "deleted": True} for i in ids]}


class AirtableServer:
    """The server in a thread on 127.0.0.1: `.url` for AIRTABLE_ENDPOINT_URL, `.state` to look and poke."""

    def __init__(self, token):
        self.state = AirtableState(token)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-airtable", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
