"""A small Iceberg REST catalog for tests: a thin HTTP adapter over pyiceberg's SqlCatalog.

    python rest_catalog_server.py --warehouse file:///abs/wh --db /abs/catalog.db \
        [--auth none|token|oauth|sigv4] [--prefix PREFIX] [--catalog-warehouse NAME] [--port N]
        [--ignore-location]

Everything a catalog decides is pyiceberg's own: request bodies are parsed with pyiceberg's
pydantic models (CreateTableRequest, CommitTableRequest), requirements are validated, metadata
files written and the current-metadata pointer swapped by SqlCatalog (sqlite in --db). This file
only maps HTTP to those calls and pyiceberg's exceptions to the REST spec's statuses
(NoSuchTable/NoSuchNamespace -> 404, CommitFailed/AlreadyExists -> 409, invalid -> 400).

It serves GET /v1/config (with a `prefix` override, so clients must use /v1/{prefix}/...),
namespaces (create, load), tables (create, load, commit) and POST /v1/oauth/tokens
(client_credentials). Authentication is checked on every catalog request:
  --auth none    nothing is required;
  --auth token   `Authorization: Bearer $INLET_REST_TOKEN`;
  --auth oauth   a token issued by /v1/oauth/tokens for client $INLET_REST_CLIENT_ID with secret
                 $INLET_REST_CLIENT_SECRET; tokens expire after --token-ttl seconds;
  --auth sigv4   an AWS SigV4 Authorization header, recomputed with botocore for the access key
                 $INLET_REST_ACCESS_KEY / $INLET_REST_SECRET_KEY, region --region and service
                 --signing-name, with the body's SHA-256 checked.
Wrong or missing credentials are answered 401 (403 for a SigV4 signature that does not match).

Test hooks (not part of the REST spec): GET /test/stats (requests per auth outcome, tokens
issued) and POST /test/revoke-tokens (every issued token becomes invalid).

The listening port is printed on stdout first; the server exits when stdin closes or on
SIGTERM.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import ValidationError
from pyiceberg.catalog.rest import CreateTableRequest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.table import CommitTableRequest

NAMESPACE_SEPARATOR = "\x1f"


class HttpError(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class State:
    def __init__(self, args):
        self.args = args
        self.catalog = SqlCatalog(
            "inlet_test",
            uri=f"sqlite:///{args.db}",
            warehouse=args.warehouse,
        )
        # One request at a time: the catalog's semantics stay pyiceberg's, and sqlite never
        # reports "database is locked" to a test.
        self.lock = threading.Lock()
        self.tokens = {}  # token -> expiry (monotonic seconds)
        self.stats = {"ok": 0, "unauthorized": 0, "forbidden": 0, "tokens_issued": 0}


def error_body(status, kind, message):
    return {"error": {"message": message, "type": kind, "code": status}}


def parse_namespace(segment):
    return tuple(unquote(segment).split(NAMESPACE_SEPARATOR))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "inlet-test-rest-catalog"

    def log_message(self, format, *args):  # quiet: the test reads stdout for the port only
        pass

    @property
    def state(self):
        return self.server.state

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, value):
        data = json.dumps(value).encode() if value is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method):
        body = self._body()
        try:
            status, payload = self._route(method, body)
            if isinstance(payload, str):
                self._send_raw(status, payload)
            else:
                self._send(status, payload)
        except HttpError as e:
            self._send(e.status, error_body(e.status, e.kind, e.message))
        except (ValidationError, json.JSONDecodeError) as e:
            self._send(400, error_body(400, "BadRequestException", f"invalid request: {e}"))
        except Exception as e:  # a bug in this adapter or in pyiceberg: show it to the test
            traceback.print_exc(file=sys.stderr)
            self._send(500, error_body(500, type(e).__name__, str(e)))

    # ---- routing -------------------------------------------------------------------------

    def _route(self, method, body):
        split = urlsplit(self.path)
        raw_segments = [s for s in split.path.split("/") if s]
        query = dict(parse_qsl(split.query))

        if raw_segments[:1] == ["test"]:
            return self._test_hook(method, raw_segments[1:])
        if raw_segments[:1] != ["v1"]:
            raise HttpError(404, "NotFoundException", f"no route for {split.path}")
        rest = raw_segments[1:]
        if rest == ["oauth", "tokens"] and method == "POST":
            return self._token(body)

        self._authenticate(method, split, body)

        if rest == ["config"] and method == "GET":
            return self._config(query)
        prefix = [s for s in self.state.args.prefix.split("/") if s]
        if rest[: len(prefix)] != prefix:
            raise HttpError(
                404,
                "NotFoundException",
                f"no route for {split.path}: this catalog's paths start /v1/{self.state.args.prefix}/",
            )
        rest = rest[len(prefix) :]
        with self.state.lock:
            return self._catalog(method, rest, body)

    def _test_hook(self, method, rest):
        if rest == ["stats"] and method == "GET":
            return 200, dict(self.state.stats)
        if rest == ["revoke-tokens"] and method == "POST":
            self.state.tokens.clear()
            return 200, {}
        raise HttpError(404, "NotFoundException", "no such test hook")

    def _config(self, query):
        expected = self.state.args.catalog_warehouse
        if expected and query.get("warehouse") != expected:
            raise HttpError(
                400,
                "BadRequestException",
                f"unknown warehouse {query.get('warehouse')!r}; this catalog serves {expected!r}",
            )
        return 200, {
            "defaults": {"clients": "1"},
            "overrides": {"prefix": self.state.args.prefix},
        }

    def _catalog(self, method, rest, body):
        catalog = self.state.catalog
        if rest == ["namespaces"] and method == "POST":
            req = json.loads(body or b"{}")
            namespace = tuple(req.get("namespace") or ())
            if not namespace:
                raise HttpError(400, "BadRequestException", "namespace is required")
            try:
                catalog.create_namespace(namespace, req.get("properties") or {})
            except NamespaceAlreadyExistsError as e:
                raise HttpError(409, "AlreadyExistsException", str(e))
            return 200, {"namespace": list(namespace), "properties": req.get("properties") or {}}
        if len(rest) == 2 and rest[0] == "namespaces" and method in ("GET", "HEAD"):
            namespace = parse_namespace(rest[1])
            try:
                props = catalog.load_namespace_properties(namespace)
            except NoSuchNamespaceError as e:
                raise HttpError(404, "NoSuchNamespaceException", str(e))
            return 200, {"namespace": list(namespace), "properties": props}
        if len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "tables" and method == "POST":
            return self._create_table(parse_namespace(rest[1]), body)
        if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "tables":
            identifier = parse_namespace(rest[1]) + (unquote(rest[3]),)
            if method in ("GET", "HEAD"):
                return self._load_table(identifier)
            if method == "POST":
                return self._commit_table(identifier, body)
        raise HttpError(404, "NotFoundException", f"no route for {method} {'/'.join(rest)}")

    # ---- tables --------------------------------------------------------------------------

    def _table_result(self, table):
        metadata = table.metadata.model_dump_json()
        return (
            '{"metadata-location": '
            + json.dumps(table.metadata_location)
            + ', "metadata": '
            + metadata
            + ', "config": {}}'
        )

    def _load_table(self, identifier):
        try:
            table = self.state.catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError) as e:
            raise HttpError(404, "NoSuchTableException", str(e))
        return 200, self._table_result(table)

    def _create_table(self, namespace, body):
        raw = json.loads(body)
        # Optional in the REST spec, but declared without defaults by pyiceberg's model.
        for key in ("location", "partition-spec", "write-order"):
            raw.setdefault(key, None)
        req = CreateTableRequest.model_validate(raw)
        if req.stage_create:
            raise HttpError(400, "BadRequestException", "staged creates are not supported here")
        # --ignore-location: like catalogs that place tables themselves (S3 Tables), the table
        # goes to SqlCatalog's default location under --warehouse.
        location = None if self.state.args.ignore_location else req.location
        kwargs = {"schema": req.table_schema, "location": location, "properties": req.properties}
        if req.partition_spec is not None:
            kwargs["partition_spec"] = req.partition_spec
        if req.write_order is not None:
            kwargs["sort_order"] = req.write_order
        try:
            table = self.state.catalog.create_table(namespace + (req.name,), **kwargs)
        except NoSuchNamespaceError as e:
            raise HttpError(404, "NoSuchNamespaceException", str(e))
        except TableAlreadyExistsError as e:
            raise HttpError(409, "AlreadyExistsException", str(e))
        return 200, self._table_result(table)

    def _commit_table(self, identifier, body):
        req = CommitTableRequest.model_validate_json(body)
        named = tuple(req.identifier.namespace.root) + (req.identifier.name,)
        if named != identifier:
            raise HttpError(
                400, "BadRequestException", f"identifier {named} does not match the path {identifier}"
            )
        try:
            table = self.state.catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError) as e:
            raise HttpError(404, "NoSuchTableException", str(e))
        try:
            response = self.state.catalog.commit_table(table, req.requirements, req.updates)
        except CommitFailedException as e:
            raise HttpError(409, "CommitFailedException", str(e))
        except NoSuchTableError as e:
            raise HttpError(404, "NoSuchTableException", str(e))
        except ValueError as e:  # an update pyiceberg refuses to apply
            raise HttpError(400, "BadRequestException", str(e))
        return 200, (
            '{"metadata-location": '
            + json.dumps(response.metadata_location)
            + ', "metadata": '
            + response.metadata.model_dump_json()
            + "}"
        )

    # ---- authentication ------------------------------------------------------------------

    def _unauthorized(self, message):
        self.state.stats["unauthorized"] += 1
        raise HttpError(401, "NotAuthorizedException", message)

    def _authenticate(self, method, split, body):
        mode = self.state.args.auth
        header = self.headers.get("Authorization") or ""
        if mode == "none":
            pass
        elif mode == "token":
            expected = os.environ["INLET_REST_TOKEN"]
            if not hmac.compare_digest(header, f"Bearer {expected}"):
                self._unauthorized("invalid or missing bearer token")
        elif mode == "oauth":
            token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
            expiry = self.state.tokens.get(token) if token else None
            if expiry is None:
                self._unauthorized("unknown token")
            if expiry < time.monotonic():
                self._unauthorized("the token expired")
        elif mode == "sigv4":
            self._check_sigv4(method, split, body, header)
        self.state.stats["ok"] += 1

    def _token(self, body):
        form = dict(parse_qsl(body.decode()))
        if self.state.args.auth != "oauth":
            raise HttpError(400, "invalid_request", "this server does not issue tokens")
        ok = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_id") == os.environ["INLET_REST_CLIENT_ID"]
            and hmac.compare_digest(
                form.get("client_secret", ""), os.environ["INLET_REST_CLIENT_SECRET"]
            )
            and form.get("scope") == self.state.args.scope
        )
        if not ok:
            self.state.stats["unauthorized"] += 1
            # OAuth2 error answer (RFC 6749 5.2), as the REST spec's token endpoint gives it.
            return 401, {
                "error": "invalid_client",
                "error_description": "unknown client, wrong secret or scope",
            }
        token = secrets.token_urlsafe(24)
        ttl = self.state.args.token_ttl
        self.state.tokens[token] = time.monotonic() + ttl
        self.state.stats["tokens_issued"] += 1
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        }

    def _check_sigv4(self, method, split, body, header):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        args = self.state.args
        prefix = "AWS4-HMAC-SHA256 "
        if not header.startswith(prefix):
            self._unauthorized("missing SigV4 Authorization header")
        parts = dict(
            p.strip().split("=", 1) for p in header[len(prefix) :].split(",") if "=" in p
        )
        try:
            key_id, date, region, service, terminal = parts["Credential"].split("/")
            signed = parts["SignedHeaders"].split(";")
            signature = parts["Signature"]
        except (KeyError, ValueError):
            self._unauthorized("malformed SigV4 Authorization header")
        if key_id != os.environ["INLET_REST_ACCESS_KEY"]:
            self._unauthorized("unknown access key")
        if region != args.region or service != args.signing_name or terminal != "aws4_request":
            self.state.stats["forbidden"] += 1
            raise HttpError(
                403,
                "ForbiddenException",
                f"credential scope {region}/{service} is not {args.region}/{args.signing_name}",
            )
        amz_date = self.headers.get("X-Amz-Date") or ""
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            self._unauthorized("missing or malformed X-Amz-Date")
        now = datetime.datetime.now(datetime.timezone.utc)
        if abs((now - when).total_seconds()) > 300 or amz_date[:8] != date:
            self._unauthorized("the request time is too far from the server's")
        # Without the header, botocore hashes the body itself below.
        content_sha = self.headers.get("X-Amz-Content-SHA256")
        if content_sha is not None and "x-amz-content-sha256" not in signed:
            self._unauthorized("x-amz-content-sha256 is sent but not signed")
        if content_sha not in (None, "UNSIGNED-PAYLOAD") and content_sha != hashlib.sha256(body).hexdigest():
            self.state.stats["forbidden"] += 1
            raise HttpError(403, "ForbiddenException", "the body does not match its signed hash")
        if "host" not in signed:
            self._unauthorized("the host header must be signed")
        headers = {}
        for name in signed:
            value = self.headers.get(name)
            if value is None:
                self._unauthorized(f"signed header {name} is missing")
            headers[name] = value
        host = self.headers.get("Host")
        request = AWSRequest(
            method=method,
            url=f"http://{host}{split.path}",
            params=parse_qsl(split.query, keep_blank_values=True),
            data=body,
            headers=headers,
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(key_id, os.environ["INLET_REST_SECRET_KEY"]), args.signing_name, args.region
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, signature):
            self.state.stats["forbidden"] += 1
            raise HttpError(
                403,
                "ForbiddenException",
                "The request signature we calculated does not match the signature you provided",
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--auth", choices=["none", "token", "oauth", "sigv4"], default="none")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--prefix", default="inlet-test")
    parser.add_argument("--catalog-warehouse", default=None)
    parser.add_argument("--ignore-location", action="store_true")
    parser.add_argument("--token-ttl", type=int, default=2)
    parser.add_argument("--scope", default="catalog")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--signing-name", default="glue")
    args = parser.parse_args()

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)

    def watch_stdin():
        try:
            while sys.stdin.read(4096):
                pass
        except Exception:
            pass
        stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()
    server.server_close()
    # Skip interpreter teardown (native extensions may abort in destructors).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
