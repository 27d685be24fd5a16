"""The web page and JSON API of an index (Starlette, served by uvicorn on 127.0.0.1 by default).

    GET /?q=TEXT&k=N          the page: a search box and a grid of hits with their scores;
    GET /?id=ID[&plus=TEXT]   images like image ID (clicking a hit), optionally plus a text
    GET /search?q=TEXT&k=N    the same as JSON (also id=, plus=, method=auto|exact|ann)
    GET /thumb/ID             a JPEG thumbnail, made once and cached in INDEX/thumbs/
    GET /image/PATH           the original file, PATH relative to the indexed folder
    GET /info                 the index's size, folder and model as JSON

Only indexed images are served: /image/PATH answers 403 when PATH (symlinks resolved)
leaves the indexed folder and 404 when it is not an indexed image.  Queries longer than
MAX_QUERY_CHARS and k above MAX_K are refused with 400.  The page is rendered on the
server (no scripts), every user-supplied string HTML-escaped.
"""
from __future__ import annotations

import html
import os
import threading
import time
import urllib.parse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from clip_jax.search.files import UnreadableImage, is_within
from clip_jax.search.index import METHODS, Index
from clip_jax.search.thumbs import cached_thumbnail

MAX_QUERY_CHARS = 500
MAX_K = 500
DEFAULT_K = 24


class BadQuery(ValueError):
    pass


def _query(request: Request) -> dict:
    """The search parameters of a request, checked; raises BadQuery naming the problem."""
    params = request.query_params
    text = params.get("q", "").strip() or None
    plus = params.get("plus", "").strip() or None
    for name, value in (("q", text), ("plus", plus)):
        if value is not None and len(value) > MAX_QUERY_CHARS:
            raise BadQuery(f"{name} has {len(value)} characters; at most {MAX_QUERY_CHARS} are accepted")
    try:
        k = int(params.get("k", DEFAULT_K))
    except ValueError:
        raise BadQuery(f"k={params.get('k')!r} is not a whole number") from None
    if not 1 <= k <= MAX_K:
        raise BadQuery(f"k={k}; it must be between 1 and {MAX_K}")
    image_id = params.get("id")
    if image_id is not None:
        try:
            image_id = int(image_id)
        except ValueError:
            raise BadQuery(f"id={image_id!r} is not an image id") from None
    method = params.get("method", "auto")
    if method not in METHODS:
        raise BadQuery(f"method={method!r}; valid: {', '.join(METHODS)}")
    if text is None and image_id is None:
        raise BadQuery("nothing to search for: give q=TEXT or id=IMAGE_ID")
    return {"text": text, "plus": plus, "image_id": image_id, "k": k, "method": method}


class SearchApp:
    """The request handlers over one open Index."""

    def __init__(self, index: Index):
        self.index = index
        self.lock = threading.Lock()

    def run_query(self, query: dict) -> list:
        # One query at a time: refresh() may swap the loaded vectors (an update ran beside the
        # server), and a search must not mix the old rows with the new ids.
        with self.lock:
            self.index.refresh()
            if query["image_id"] is not None:
                try:
                    self.index.row_of(query["image_id"])
                except KeyError:
                    raise BadQuery(f"no image with id {query['image_id']} in this index") from None
            return self.index.search(query["text"], image=query["image_id"], plus=query["plus"], k=query["k"],
                                     method=query["method"])

    def _hit_json(self, rank: int, hit) -> dict:
        return {"rank": rank + 1, "id": hit.id, "path": hit.path, "score": round(hit.score, 6),
                "thumb": f"/thumb/{hit.id}", "image": "/image/" + urllib.parse.quote(hit.path)}

    async def search(self, request: Request) -> Response:
        try:
            query = _query(request)
        except BadQuery as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        start = time.perf_counter()
        try:
            hits = await _in_thread(self.run_query, query)
        except (BadQuery, ValueError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse({"query": query, "seconds": round(time.perf_counter() - start, 4), "count": len(hits),
                             "hits": [self._hit_json(rank, hit) for rank, hit in enumerate(hits)]})

    async def page(self, request: Request) -> Response:
        query, hits, error, status = None, [], None, 200
        if request.query_params.get("q") or request.query_params.get("id"):
            try:
                query = _query(request)
                hits = await _in_thread(self.run_query, query)
            except (BadQuery, ValueError) as problem:
                error, status = str(problem), 400
        return HTMLResponse(self.render(request, query, hits, error), status_code=status)

    async def thumb(self, request: Request) -> Response:
        image_id = request.path_params["image_id"]
        path = self.index.store.path_of(image_id)
        if path is None:
            return Response("no such image", status_code=404, media_type="text/plain")
        source = os.path.join(self.index.root, path)
        if not is_within(source, self.index.root):
            return Response("outside the indexed folder", status_code=403, media_type="text/plain")
        try:
            file = await _in_thread(cached_thumbnail, self.index.path, image_id, source)
        except (UnreadableImage, FileNotFoundError):
            return Response("image no longer readable", status_code=404, media_type="text/plain")
        return FileResponse(file, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    async def image(self, request: Request) -> Response:
        relative = request.path_params["path"]
        source = os.path.join(self.index.root, relative)
        if os.path.isabs(relative) or not is_within(source, self.index.root):
            return Response("outside the indexed folder", status_code=403, media_type="text/plain")
        if self.index.store.id_of(relative) is None or not os.path.isfile(source):
            return Response("not an indexed image", status_code=404, media_type="text/plain")
        return FileResponse(source)

    async def info(self, request: Request) -> Response:
        manifest = self.index.manifest
        return JSONResponse({"images": self.index.store.count(), "root": self.index.root,
                             "model": manifest["model"].get("name"), "fingerprint": manifest["model"]["fingerprint"],
                             "embed_dim": manifest["embed_dim"], "dtype": manifest["dtype"],
                             "skipped": len(self.index.store.skipped())})

    # -- the page ---------------------------------------------------------------------------------

    def render(self, request: Request, query: dict | None, hits: list, error: str | None) -> str:
        esc = html.escape
        params = request.query_params
        k = params.get("k", str(DEFAULT_K))
        count = self.index.store.count()
        parts = [PAGE_HEAD.format(title=esc(f"{params.get('q') or 'clip_jax search'}")),
                 '<header><form action="/" method="get">'
                 f'<input type="search" name="q" value="{esc(params.get("q", ""))}" '
                 f'maxlength="{MAX_QUERY_CHARS}" placeholder="Search {count:,} images by text" autofocus>'
                 f'<input type="number" name="k" value="{esc(k)}" min="1" max="{MAX_K}" title="number of hits">'
                 '<button type="submit">Search</button></form>'
                 f'<p class="meta">{count:,} images in {esc(self.index.root)} · model '
                 f'{esc(self.index.manifest["model"].get("name") or "custom")}</p></header>']
        if error:
            parts.append(f'<p class="error">{esc(error)}</p>')
        if query and query["image_id"] is not None and not error:
            image_id = query["image_id"]
            parts.append(f'<section class="like"><img src="/thumb/{image_id}" alt="query image"><div>Images like '
                         f'<b>{esc(self.index.store.path_of(image_id) or "")}</b>'
                         f'<form action="/" method="get"><input type="hidden" name="id" value="{image_id}">'
                         f'<input type="hidden" name="k" value="{esc(k)}">'
                         f'<input type="search" name="plus" value="{esc(params.get("plus", ""))}" '
                         f'maxlength="{MAX_QUERY_CHARS}" placeholder="plus a text, e.g. at night">'
                         '<button type="submit">Refine</button></form></div></section>')
        if hits:
            parts.append('<main class="grid">')
            for rank, hit in enumerate(hits):
                loading = "eager" if rank < 48 else "lazy"
                parts.append(
                    f'<figure class="hit" data-id="{hit.id}"><a href="/?id={hit.id}&amp;k={esc(k)}" '
                    f'title="Search by this image"><img class="thumb" src="/thumb/{hit.id}" alt="{esc(hit.path)}" '
                    f'loading="{loading}"></a><figcaption><span class="score">{hit.score:.3f}</span> '
                    f'<a href="/image/{esc(urllib.parse.quote(hit.path))}" target="_blank">'
                    f'{esc(os.path.basename(hit.path))}</a></figcaption></figure>')
            parts.append("</main>")
        elif query and not error:
            parts.append('<p class="meta">No hits.</p>')
        parts.append("</body></html>")
        return "\n".join(parts)


PAGE_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }}
header {{ position: sticky; top: 0; background: #fff; padding: 12px 20px; border-bottom: 1px solid #ddd; }}
form {{ display: flex; gap: 8px; }}
input[type=search] {{ flex: 1; font-size: 18px; padding: 8px 10px; border: 1px solid #bbb; border-radius: 6px; }}
input[type=number] {{ width: 70px; font-size: 16px; }}
button {{ font-size: 16px; padding: 8px 16px; border-radius: 6px; border: 0; background: #2b6cb0; color: #fff; }}
.meta {{ color: #666; font-size: 13px; margin: 6px 0 0; }}
.error {{ color: #a00; margin: 16px 20px; }}
.like {{ display: flex; gap: 16px; align-items: center; margin: 16px 20px; }}
.like img {{ max-height: 96px; border-radius: 4px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 14px; padding: 16px 20px; }}
.hit {{ margin: 0; background: #fff; border-radius: 6px; overflow: hidden; box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
.hit img {{ display: block; width: 100%; height: 170px; object-fit: contain; background: #222; }}
figcaption {{ font-size: 12px; padding: 6px 8px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.score {{ font-weight: 600; color: #2b6cb0; margin-right: 4px; }}
figcaption a {{ color: #444; text-decoration: none; }}
</style></head><body>"""


async def _in_thread(fn, *args):
    """Run blocking work (JAX, PIL) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def create_app(index: Index) -> Starlette:
    app = SearchApp(index)
    return Starlette(routes=[
        Route("/", app.page),
        Route("/search", app.search),
        Route("/thumb/{image_id:int}", app.thumb),
        Route("/image/{path:path}", app.image),
        Route("/info", app.info),
    ])


def serve(index: Index, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `index` until interrupted.  The text encoder is compiled first, so the first query is fast."""
    import uvicorn

    if len(index):
        index.search("a photo", k=1)
    print(f"serving {len(index):,} images of {index.root} at http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(index), host=host, port=port, log_level="warning")
