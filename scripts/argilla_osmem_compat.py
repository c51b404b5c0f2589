"""Run the argilla-server CLI against osmem-server (local review stack only; see argilla-stack.sh).

Argilla 2.8 adds or removes one response in a record's search document with a Painless script
update, which osmem does not implement ("update with script is not supported by osmem"): every
submit in the annotator UI then fails with an error after the response is already stored in
SQLite, and the search index never sees it. Here those two calls read the document, change its
`responses` list in Python and write the list back as a partial update, which osmem supports.
Concurrent submits to one record may race in the index (SQLite stays right; the reindex on every
start rebuilds the index). Production Argilla with OpenSearch/Elasticsearch does not need this.

Usage: python argilla_osmem_compat.py <argilla_server CLI arguments>
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argilla_server.search_engine.commons import es_index_name_for_dataset
from argilla_server.search_engine.opensearch import OpenSearchEngine


async def _rewrite_responses(engine: OpenSearchEngine, record: Any, change: Callable[[list], list]) -> None:
    index = es_index_name_for_dataset(record.dataset)
    document = await engine.client.get(index=index, id=str(record.id))
    responses = change(list(document["_source"].get("responses") or []))
    await engine._update_document_request(index, id=str(record.id), body={"doc": {"responses": responses}})


async def update_record_response(self: OpenSearchEngine, response: Any) -> None:
    mapped = self._map_record_response_to_es(response)
    mapped = {**mapped, "id": str(mapped["id"]), "user_id": str(mapped["user_id"])}
    await _rewrite_responses(self, response.record, lambda rs: [r for r in rs if r.get("id") != mapped["id"]] + [mapped])


async def delete_record_response(self: OpenSearchEngine, response: Any) -> None:
    await _rewrite_responses(self, response.record, lambda rs: [r for r in rs if r.get("id") != str(response.id)])


OpenSearchEngine.update_record_response = update_record_response
OpenSearchEngine.delete_record_response = delete_record_response

if __name__ == "__main__":
    from argilla_server.cli import app

    app(prog_name="argilla_server")
