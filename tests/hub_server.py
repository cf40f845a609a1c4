"""A small Hugging Face Hub-compatible file server on loopback, for tests (HF_ENDPOINT).

Implements only what huggingface_hub 2.x calls to download a model repository:
- GET /api/models/ORG/NAME[/revision/REV]?blobs=True  -> model_info (sha, siblings with sizes)
- GET /api/models/ORG/NAME/tree/REV                   -> list_repo_tree (files, sizes, lfs oid)
- HEAD/GET /ORG/NAME/resolve/REV/FILE                 -> X-Repo-Commit, ETag, X-Linked-Size, Range
Unknown repositories answer 404 with X-Error-Code: RepoNotFound, as the Hub does.

Knobs for failure tests: `rate` (bytes/s, so a test can cancel mid-file), `truncate` (files served
shorter than listed), `corrupt` (files served with flipped bytes, same size), `gated` (repositories
that answer 403 GatedRepo without their token) and `log` (every request: method, path, Range
header).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]

    def etag(self, name: str) -> str:
        data = self.files[name]
        if is_lfs(name):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str) -> bool:
    return name.endswith(".safetensors")


def repo_from_dir(directory: Path, commit: str) -> Repo:
    return Repo(commit, {p.name: p.read_bytes() for p in sorted(directory.iterdir())
                         if p.is_file()})


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    rate: float | None = None  # bytes per second for file bodies; None: as fast as possible
    truncate: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    gated: dict[str, str] = field(default_factory=dict)  # repo id -> the token it wants
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def gets(self, name: str) -> int:
        """How many GETs of a file's content were served."""
        return sum(1 for m, p, _ in self.log if m == "GET" and p.endswith("/" + name)
                   and "/resolve/" in p)

    # --- handlers ----------------------------------------------------------------------------
    def _repo(self, request: web.Request) -> Repo:
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        wanted = self.gated.get(repo_id)
        if wanted is not None and request.headers.get("Authorization") != f"Bearer {wanted}":
            raise web.HTTPForbidden(headers={"X-Error-Code": "GatedRepo",
                                             "X-Error-Message": "Access to this repo is gated"})
        if repo is None:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound",
                                            "X-Error-Message": "Repository not found"})
        return repo

    async def model_info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        siblings = []
        for name, data in repo.files.items():
            sib: dict[str, object] = {"rfilename": name, "size": len(data),
                                      "blobId": repo.etag(name)}
            if is_lfs(name):
                sib["lfs"] = {"size": len(data), "sha256": repo.etag(name), "pointerSize": 134}
            siblings.append(sib)
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        return web.json_response({"id": repo_id, "modelId": repo_id, "sha": repo.commit,
                                  "private": False, "siblings": siblings})

    async def tree(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        out = []
        for name, data in repo.files.items():
            item: dict[str, object] = {"type": "file", "path": name, "size": len(data),
                                       "oid": repo.etag(name)}
            if is_lfs(name):
                item["lfs"] = {"oid": repo.etag(name), "size": len(data), "pointerSize": 134}
            out.append(item)
        return web.json_response(out)

    def _body(self, name: str, data: bytes) -> bytes:
        if name in self.truncate:
            return data[: len(data) * 2 // 3]
        if name in self.corrupt:
            middle = len(data) // 2
            return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + \
                data[middle + 64:]
        return data

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        self.log.append((request.method, request.path, request.headers.get("Range")))
        repo = self._repo(request)
        name = request.match_info["filename"]
        if name not in repo.files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound",
                                            "X-Repo-Commit": repo.commit})
        listed = repo.files[name]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(name)}"',
                   "X-Linked-Size": str(len(listed)), "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        body = self._body(name, listed)
        status, start = 200, 0
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first)
            end = int(last) + 1 if last else len(body)
            body = body[start:end]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(listed)}"
        del headers["X-Linked-Size"]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        chunk = 16 * 1024
        try:
            for offset in range(0, len(body), chunk):
                await response.write(body[offset:offset + chunk])
                if self.rate:
                    await asyncio.sleep(chunk / self.rate)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away (a cancelled or killed download)
        return response

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HubServer:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}", self.model_info)
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self.model_info)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}", self.tree)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{filename:.+}", self.resolve)
        started = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            started.set()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="hub-server", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
