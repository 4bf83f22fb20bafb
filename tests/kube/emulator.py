"""A small in-process Kubernetes API server: enough of the real REST API for the driver.

No kube-apiserver runs on these machines, so the real `kubernetes` client talks HTTP to
this instead. It speaks the wire protocol the driver uses, and nothing more:

- core/v1 pods, configmaps, services, apps/v1 deployments, statefulsets, replicasets, batch/v1 jobs and
  rbac/v1 rolebindings in namespaces, and the namespaces themselves: an object is made only in an Active
  namespace, and deleting a namespace marks it Terminating, then deletes everything in it and it
  (`Store.termination` seconds later)
- GET pods/{name}/log?container=, from what the test controller's kubelet stand-in stored
- GET one, LIST (labelSelector `k=v,k!=v,k`, fieldSelector `metadata.name=`), POST,
  PATCH as JSON patch (RFC 6902) or JSON merge patch (RFC 7386), DELETE
- a global resourceVersion, `metadata.generation` bumped on spec changes
- `?watch=true` streams from a resourceVersion (chunked, one JSON event a line),
  honouring timeoutSeconds and sending BOOKMARKs when idle

PyPI `kmock` 0.8 was tried first: its emulator lists with the resourceVersion '...',
replays every object as ADDED on each watch whatever resourceVersion is asked for, has no
selectors and no generation, so a client that resumes watches (as `kubectl rollout status`
and our driver do) cannot be tested against it.

Every request is recorded (`calls`) so tests can count them and check RBAC.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RESOURCES = {  # plural -> (group/version path, kind, apiVersion)
    "pods": ("/api/v1", "Pod", "v1"),
    "configmaps": ("/api/v1", "ConfigMap", "v1"),
    "services": ("/api/v1", "Service", "v1"),
    "deployments": ("/apis/apps/v1", "Deployment", "apps/v1"),
    "statefulsets": ("/apis/apps/v1", "StatefulSet", "apps/v1"),
    "replicasets": ("/apis/apps/v1", "ReplicaSet", "apps/v1"),
    "jobs": ("/apis/batch/v1", "Job", "batch/v1"),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", "RoleBinding", "rbac.authorization.k8s.io/v1"),
}
# Where a spec change bumps metadata.generation, as the real server does for these kinds.
GENERATIONS = {"deployments", "statefulsets", "replicasets"}
# Cluster-scoped: stored under the namespace "", at /api/v1/namespaces[/{name}].
NAMESPACES = "namespaces"


@dataclass(frozen=True)
class Call:
    """One request as an authorizer sees it: the verb, resource and (when it names one) object."""

    method: str
    path: str
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    watch: bool


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class Store:
    """Objects, the resourceVersion clock, and the event log watches read from."""

    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, dict]] = []  # (rv, resource, type, object)
        self.rv = 0
        self.changed = threading.Condition()
        self.logs: dict[tuple[str, str, str], str] = {}  # (namespace, pod, container) -> its output
        self.termination = 0.3  # seconds a deleted namespace stays Terminating, so a client can see it

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self.changed:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, resource: str, namespace: str | None = None) -> tuple[list[dict], int]:
        with self.changed:
            items = [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self.objects.items())
                if r == resource and (namespace is None or ns == namespace)
            ]
            return items, self.rv

    def create(self, resource: str, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        key = (resource, meta.get("namespace", ""), meta["name"])
        with self.changed:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{resource} "{meta["name"]}" already exists')
            if resource == NAMESPACES:
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
                obj["status"] = {"phase": "Active"}
            else:
                self._check_open(meta["namespace"])
            kind, api_version = _kind(resource)
            obj.update(kind=kind, apiVersion=api_version)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            if resource in GENERATIONS:
                meta["generation"] = 1
            return self._commit(resource, key, obj, "ADDED")

    def replace(self, resource: str, obj: dict, expect_rv: str | None = None) -> dict:
        """Store a new version; a spec change bumps generation. Unchanged objects are not rewritten."""
        meta = obj["metadata"]
        key = (resource, meta.get("namespace", ""), meta["name"])
        with self.changed:
            old = self.objects.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{resource} "{meta["name"]}" not found')
            if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"the object {meta['name']} has been modified; "
                    "please apply your changes to the latest version and try again",
                )
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if obj == old:
                return copy.deepcopy(old)
            if resource in GENERATIONS and obj.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            return self._commit(resource, key, obj, "MODIFIED")

    def delete(self, resource: str, namespace: str, name: str) -> dict:
        if resource == NAMESPACES:
            return self._terminate(name)
        with self.changed:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, resource, "DELETED", copy.deepcopy(obj)))
            self.changed.notify_all()
            return obj

    def _check_open(self, namespace: str) -> None:
        """As the API server: nothing is made in a namespace that does not exist or is being deleted."""
        found = self.objects.get((NAMESPACES, "", namespace))
        if found is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if found["status"]["phase"] != "Active":
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _terminate(self, name: str) -> dict:
        """Mark the namespace Terminating; its content and then it go `termination` seconds later, as the
        namespace controller deletes what is in a namespace before the namespace itself."""
        with self.changed:
            obj = copy.deepcopy(self.objects.get((NAMESPACES, "", name)))
            if obj is None:
                raise ApiError(404, "NotFound", f'namespaces "{name}" not found')
            if obj["status"]["phase"] == "Terminating":
                return obj
            obj["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["status"] = {"phase": "Terminating"}
            obj = self._commit(NAMESPACES, (NAMESPACES, "", name), obj, "MODIFIED")
        timer = threading.Timer(self.termination, self._finalize, args=(name,))
        timer.daemon = True
        timer.start()
        return obj

    def _finalize(self, name: str) -> None:
        with self.changed:
            inside = [key for key in self.objects if key[0] != NAMESPACES and key[1] == name]
        for resource, namespace, obj_name in inside:
            try:
                self.delete(resource, namespace, obj_name)
            except ApiError:
                pass  # already gone
        with self.changed:
            self.logs = {key: text for key, text in self.logs.items() if key[0] != name}
            obj = self.objects.pop((NAMESPACES, "", name), None)
            if obj is not None:
                self.rv += 1
                obj["metadata"]["resourceVersion"] = str(self.rv)
                self.events.append((self.rv, NAMESPACES, "DELETED", copy.deepcopy(obj)))
                self.changed.notify_all()

    def _commit(self, resource, key, obj, kind) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = copy.deepcopy(obj)
        self.events.append((self.rv, resource, kind, copy.deepcopy(obj)))
        self.changed.notify_all()
        return copy.deepcopy(obj)


def _kind(resource: str) -> tuple[str, str]:
    if resource == NAMESPACES:
        return "Namespace", "v1"
    _, kind, api_version = RESOURCES[resource]
    return kind, api_version


def json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902: add, remove, replace, test. Enough for what a deployer sends."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
            if parent is None:
                raise ApiError(422, "Invalid", f"json patch: path {op['path']} does not exist")
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise ApiError(409, "Conflict", f"json patch test failed at {op['path']}; the object was modified")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"json patch: replace of missing {op['path']}")
                parent[last] = op["value"]
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ApiError(422, "Invalid", f"json patch op {kind!r} is not supported here")
    return doc


def merge_patch(doc, patch):
    """RFC 7386: objects merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _labels_match(selector: str | None, labels: dict) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _fields_match(selector: str | None, obj: dict) -> bool:
    for term in filter(None, (selector or "").split(",")):
        field, value = term.replace("==", "=").split("=", 1)
        if field not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f"field label not supported: {field}")
        if obj["metadata"].get(field.split(".")[1]) != value:
            return False
    return True


class Emulator:
    """The server: `with Emulator() as api:` then point a client at `api.host`."""

    def __init__(self, store: Store | None = None):
        self.store = store or Store()
        self.calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self.closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-emulator", daemon=True)

    def __enter__(self) -> Emulator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def record(self, call: Call) -> None:
        with self._calls_lock:
            self.calls.append(call)

    def since(self, mark: int) -> list[Call]:
        """Calls made after `mark = len(api.calls)`: the requests of one roll."""
        with self._calls_lock:
            return list(self.calls[mark:])


def _route(path: str) -> tuple[str, str | None, str | None]:
    """Split `/apis/apps/v1/namespaces/ns/deployments/name` into resource, namespace, name."""
    parts = path.removeprefix("/api/v1/").split("/")
    if path.startswith("/api/v1/namespaces") and parts[0] == NAMESPACES and len(parts) <= 2:
        return NAMESPACES, None, parts[1] if len(parts) == 2 else None
    for plural, (prefix, _, _) in RESOURCES.items():
        head = f"{prefix}/namespaces/"
        if path.startswith(head):
            parts = path[len(head) :].split("/")
            if len(parts) >= 2 and parts[1] == plural and len(parts) <= 3:
                return plural, parts[0], parts[2] if len(parts) == 3 else None
            if plural == "pods" and len(parts) == 4 and parts[1] == plural and parts[3] == "log":
                return "pods/log", parts[0], parts[2]  # a subresource: RBAC's resource is `pods/log`
    raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


def _handler(api: Emulator):
    store = api.store

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: pytest shows failures, not access logs
            pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PATCH(self):
            self._serve("PATCH")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

        def _serve(self, method: str):
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            watch = query.get("watch") in ("true", "1")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                return  # the client went away mid-request (a killed worker): an apiserver never sees it either
            try:
                resource, namespace, name = _route(url.path)
                collection = name is None
                verb = {
                    "GET": "watch" if watch else ("get" if name else "list"),
                    "POST": "create",
                    "PATCH": "patch",
                    "PUT": "update",
                    "DELETE": "delete",
                }[method]
                if verb in ("list", "watch") and (field := query.get("fieldSelector", "")).startswith("metadata.name="):
                    name = field.split("=", 1)[1].split(",")[0]  # what RBAC's resourceNames match on
                api.record(Call(method, url.path, verb, resource, namespace, name, watch))
                if watch:
                    return self._watch(resource, namespace, query)
                if resource == "pods/log":
                    return self._log(namespace, name, query)
                self._send(
                    200 if method != "POST" else 201,
                    self._act(method, resource, namespace, None if collection else name, query, body),
                )
            except ApiError as err:
                self._send(err.code, err.status())
            except (KeyError, ValueError, TypeError) as err:
                self._send(400, ApiError(400, "BadRequest", f"bad request: {err!r}").status())

        def _act(self, method, resource, namespace, name, query, body):
            if method == "GET" and name is None:
                items, rv = store.list(resource, namespace)
                items = [
                    o
                    for o in items
                    if _labels_match(query.get("labelSelector"), o["metadata"].get("labels", {}))
                    and _fields_match(query.get("fieldSelector"), o)
                ]
                kind, api_version = _kind(resource)
                return {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            if method == "POST":
                obj = json.loads(body)
                if namespace is not None:
                    obj.setdefault("metadata", {})["namespace"] = namespace
                return store.create(resource, obj)
            current = store.get(resource, namespace or "", name)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
            if method == "GET":
                return current
            if method == "DELETE":
                return store.delete(resource, namespace or "", name)
            if method == "PUT":
                obj = json.loads(body)
                return store.replace(resource, obj, obj.get("metadata", {}).get("resourceVersion"))
            kind = (self.headers.get("Content-Type") or "").split(";")[0]
            if kind == "application/json-patch+json":
                patched = json_patch(current, json.loads(body))
            elif kind == "application/merge-patch+json":
                patched = merge_patch(current, json.loads(body))
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"this emulator does not speak {kind!r}; send a JSON patch or a JSON merge patch",
                )
            return store.replace(resource, patched, current["metadata"]["resourceVersion"])

        def _watch(self, resource, namespace, query):
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            label, field = query.get("labelSelector"), query.get("fieldSelector")
            since = int(query.get("resourceVersion") or 0)
            bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if since == 0:  # no resourceVersion: start with the current state, as the real server does
                items, since = store.list(resource, namespace)
                for obj in items:
                    self._event(resource, namespace, label, field, "ADDED", obj)
            try:
                while not api.closing.is_set() and time.monotonic() < deadline:
                    with store.changed:
                        fresh = [e for e in store.events if e[0] > since and e[1] == resource]
                        if not fresh:
                            store.changed.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                            fresh = [e for e in store.events if e[0] > since and e[1] == resource]
                        rv = store.rv
                    for event_rv, _, kind, obj in fresh:
                        since = event_rv
                        self._event(resource, namespace, label, field, kind, obj)
                    if not fresh and bookmarks:  # also tells us, by failing, that the client left
                        kind, api_version = _kind(resource)
                        self._chunk(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": kind,
                                    "apiVersion": api_version,
                                    "metadata": {"resourceVersion": str(rv)},
                                },
                            }
                        )
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            self.close_connection = True

        def _event(self, resource, namespace, label, field, kind, obj):
            meta = obj["metadata"]
            if (
                meta.get("namespace") == namespace
                and _labels_match(label, meta.get("labels", {}))
                and _fields_match(field, obj)
            ):
                self._chunk({"type": kind, "object": obj})

        def _log(self, namespace, name, query):
            pod = store.get("pods", namespace, name)
            if pod is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found')
            container = query.get("container") or pod["spec"]["containers"][0]["name"]
            data = store.logs.get((namespace, name, container), "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, payload: dict):
            data = json.dumps(payload).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _send(self, code: int, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
