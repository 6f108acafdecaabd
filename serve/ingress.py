"""The ingress deployment: authentication, limits, and the calls down the graph.

The HTTP routes live in :mod:`serve.routes`; Serve builds them in each replica from
:meth:`Ingress.__serve_build_asgi_app__`, so the FastAPI app is never pickled and its handlers
close over this replica's state. Downstream calls are awaited (the event loop never blocks)
and the whole request is bounded by the timeout; when a request ends early every call it made
down the graph is cancelled, and a replica that dies on the way is handled by why it died
(:mod:`serve.calls`). What the answers hold is shaped by :mod:`echoprime.api`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from echoprime.api import answers
from echoprime.api.answers import bundle_summary
from echoprime.api.archive import ArchiveStudies
from echoprime.api.auth import ApiKeyAuth
from echoprime.api.errors import ApiError, log
from echoprime.api.examples import EXAMPLE_COUNT, EXAMPLE_SEED, example_study
from echoprime.api.guards import UploadSlots
from echoprime.api.security import log_exposure
from echoprime.api.uploads import Limits, Study
from serve.args import ServeArgs
from serve.calls import GraphCalls
from serve.routes import create_api

DEPLOYMENTS = ("Preprocess", "ViewClassifier", "VideoEncoder", "AnatomicalAttention", "RAIRetriever")


class Ingress(GraphCalls):
    """The graph's entry (wrapped with ``serve.ingress()`` at build time).

    Args:
        preprocess, view_classifier, video_encoder, attention, retriever: handles of the other
            deployments (in the order of :data:`DEPLOYMENTS`).
        args: the application's arguments.

    Raises:
        echoprime.api.auth.AuthConfigError: no API key configured and authentication not disabled.
    """

    def __init__(
        self,
        preprocess: Any,
        view_classifier: Any,
        video_encoder: Any,
        attention: Any,
        retriever: Any,
        args: ServeArgs,
    ) -> None:
        handles = (preprocess, view_classifier, video_encoder, attention, retriever)
        self.handles = dict(zip(DEPLOYMENTS, handles, strict=True))
        self.preprocess, self.view_classifier, self.video_encoder, self.attention, self.retriever = handles
        self.args = args
        self.limits = Limits.from_args(args)
        self.uploads = UploadSlots(self.limits.max_concurrent_uploads)
        self.auth = ApiKeyAuth.from_env(
            key_file=args.api_key_file, key_env=args.api_key_env, disabled=args.auth_disabled
        )
        log_exposure(self.auth, args.host, args.host_allow_list())
        self.model = bundle_summary(args.bundle_uri)
        log.info("echoprime serve: bundle %s (sha256 %s)", args.bundle_uri, self.model["bundle"]["sha256"])
        self._archive: ArchiveStudies | None = None

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self)

    async def interpret(self, study: Study, previews: bool = False, loops: bool = False) -> dict[str, Any]:
        """The study's ``StudyResult`` JSON (plus ``previews`` and ``loops`` when asked for)."""
        pre_resp, pre = await self.call(self.preprocess.load, study, previews, loops, study=study)
        if pre["clips"].shape[0] == 0:
            no_views = answers.no_views()
            _, result = await self.call(
                self.retriever.assemble, None, None, no_views, pre["files"], study=study
            )
        else:

            def chain(remote: Callable[..., Any]) -> Any:
                # Each deployment gets the previous one's response as it is (Serve hands the result
                # on through the object store): this replica awaits only the report, not the
                # embeddings, view probabilities and section weights on the way.
                probs = remote(self.view_classifier.classify, pre_resp)
                encoded = remote(self.video_encoder.encode, pre_resp)  # embeddings, then the heads' logits
                attended = remote(self.attention.attend, encoded, probs)
                return remote(self.retriever.report, attended, probs, pre["files"], encoded)

            _, result = await self.retrying(chain, study)
        if previews:
            result["previews"] = pre["previews"]
        if loops:
            result["loops"] = pre["loops"]
        return result

    async def interpret_dicomweb(self, study_uid: str, fmt: str, store: bool) -> tuple[Any, str]:
        """Study ``study_uid`` of the configured archive through the graph, as ``(content, media
        type)`` (:meth:`echoprime.api.archive.ArchiveStudies.answer`)."""
        if not self.args.dicomweb_url:
            raise ApiError(404, "no_archive", "this server has no DICOMweb archive (args.dicomweb_url)")
        if self._archive is None:
            self._archive = ArchiveStudies(self.args.dicomweb_url, self.limits, self.model["bundle"])
        instances = await asyncio.to_thread(self._archive.fetch, study_uid)
        result = await self.interpret([(i.name, i.data) for i in instances])
        return await asyncio.to_thread(self._archive.answer, study_uid, result, instances, fmt, store)

    async def embed_videos(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """Each usable video's embedding and view, plus every file's status."""
        pre_resp, pre = await self.call(self.preprocess.load, files, False, study=files)
        if pre["clips"].shape[0] == 0:
            return answers.video_embeddings(pre["files"], [], [])
        _, (emb, probs) = await self.retrying(
            lambda remote: asyncio.gather(
                remote(self.video_encoder.embed, pre_resp), remote(self.view_classifier.classify, pre_resp)
            ),
            files,
        )
        return answers.video_embeddings(pre["files"], emb, probs)

    async def embed_text(self, reports: list[str]) -> dict[str, Any]:
        answers.check_texts(reports, self.limits.max_text_chars)
        _, emb = await self.call(self.retriever.embed_text, reports)
        return answers.text_embeddings(emb)

    async def search(self, query: str | list[float], k: int) -> dict[str, Any]:
        _, hits = await self.call(self.retriever.search, query, k)
        return {"results": hits}

    async def example(self, index: int) -> dict[str, Any]:
        """Synthetic example study ``index``, made here from the synthetic cohort (no replica)."""
        if not self.args.examples:
            raise ApiError(404, "not_found", "synthetic examples are switched off (args.examples: false)")
        if not 0 <= index < EXAMPLE_COUNT:
            raise ApiError(404, "not_found", f"example index must be in 0..{EXAMPLE_COUNT - 1}, got {index}")
        return await asyncio.to_thread(example_study, EXAMPLE_SEED, index)
