"""The online service's parts without a server: request validation and micro-batching."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from serving.batcher import MicroBatcher, OverloadedError
from serving.categorizer import shares_a_store
from serving.validation import RequestError, parse_products


def _refused(body: object, image_root: str | None = None, max_products: int = 4) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_products(body, max_products, image_root)
    return caught.value


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ([{"product_id": "a"}], 400, "bad_request", "products"),
    ({"products": []}, 400, "bad_request", "products"),
    ({"products": [{"product_id": str(i), "title": "t"} for i in range(5)]}, 413, "too_many_products",
     "products"),
    ({"products": ["a product"]}, 422, "not_an_object", "products[0]"),
    ({"products": [{"title": "no id"}]}, 422, "missing_product_id", "products[0].product_id"),
    ({"products": [{"product_id": "a"}]}, 422, "no_text_or_image", "products[0]"),
    ({"products": [{"product_id": "a", "title": "t"}, {"product_id": "b", "title": ["x"]}]}, 422,
     "bad_field_type", "products[1].title"),
    ({"products": [{"product_id": "a", "title": "t", "updated_at": "soon"}]}, 422, "bad_updated_at",
     "products[0].updated_at"),
    ({"products": [{"product_id": "a", "title": "x" * 4001}]}, 422, "oversized_field", "products[0].title"),
    ({"products": [{"product_id": "a", "title": "t"}, {"product_id": "a", "title": "u"}]}, 422,
     "duplicate_product_id", "products[1].product_id"),
    ({"products": [{"product_id": "a", "image_base64": ["not base64!"]}]}, 422, "bad_image",
     "products[0].image_base64[0]"),
    ({"products": [{"product_id": "a", "image_base64": "aGk="}]}, 422, "bad_field_type",
     "products[0].image_base64"),
    ({"products": [{"product_id": "a", "title": "t", "image_uris": ["/etc/passwd"]}]}, 422, "bad_image",
     "products[0].image_uris[0]"),
])
def test_bad_requests_are_refused_naming_the_field(body: object, status: int, code: str, field: str) -> None:
    error = _refused(body)
    assert (error.status, error.code, error.field) == (status, code, field)
    assert error.body()["error"]["field"] == field


def test_products_are_normalized_as_the_batch_readers_do(tmp_path: Path) -> None:
    photo = tmp_path / "photos" / "mug.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"bytes")
    products = parse_products({"products": [
        {"product_id": "a", "store": "s", "title": "<b>Mug</b>  350 ml", "tags": "kitchen, mugs",
         "image_uris": ["photos/mug.jpg"], "gpt_id": "not an id"},
        {"product_id": "b", "image_base64": [base64.b64encode(b"jpeg bytes").decode()]},
    ]}, 4, str(tmp_path))
    first, second = products
    assert first.record["title"] == "Mug 350 ml" and first.record["tags"] == ["kitchen", "mugs"]
    assert first.record["image_uris"] == [str(photo)] and first.record["gpt_id"] is None
    (name, data), = second.inline_images.items()
    assert second.record["image_uris"] == [name] and data == b"jpeg bytes"
    # A local path outside --image_root is refused, even one that climbs out of it.
    error = _refused({"products": [{"product_id": "a", "image_uris": ["photos/../../x.jpg"]}]}, str(tmp_path))
    assert error.code == "bad_image"


def _double(jobs: Sequence[Sequence[int]]) -> list[list[int]]:
    if any(item < 0 for job in jobs for item in job):
        raise ValueError("negative")
    return [[2 * item for item in job] for job in jobs]


def test_concurrent_jobs_share_batches_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    def process(jobs: Sequence[Sequence[int]]) -> list[list[int]]:
        calls.append([len(job) for job in jobs])
        return _double(jobs)

    async def scenario() -> list[list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch=4, max_wait_s=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(5)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results == [[2 * i, 2 * i + 200] for i in range(5)]
    assert calls == [[2, 2], [2, 2], [2]], "two-item jobs, four items a batch"


def test_a_failing_job_fails_alone_and_the_queue_is_bounded() -> None:
    release = threading.Event()

    def process(jobs: Sequence[Sequence[int]]) -> list[list[int]]:
        release.wait(5)
        return _double(jobs)

    async def scenario() -> tuple[list, type]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch=8, max_wait_s=0.01, max_queue=3)
        batcher.start()
        good = asyncio.ensure_future(batcher.submit([1]))
        bad = asyncio.ensure_future(batcher.submit([-1]))
        await asyncio.sleep(0.001)
        try:
            await batcher.submit([1, 2])
            overloaded = None
        except OverloadedError as error:
            overloaded = type(error)
        release.set()
        outcomes = await asyncio.gather(good, bad, return_exceptions=True)
        await batcher.stop()
        return outcomes, overloaded

    (good, bad), overloaded = asyncio.run(scenario())
    assert good == [2] and isinstance(bad, ValueError)
    assert overloaded is OverloadedError


def test_a_job_whose_caller_gave_up_is_not_run() -> None:
    seen: list[int] = []
    release = threading.Event()

    def process(jobs: Sequence[Sequence[int]]) -> list[list[int]]:
        release.wait(5)
        seen.extend(item for job in jobs for item in job)
        return _double(jobs)

    async def scenario() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch=1, max_wait_s=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.01)  # job 1 is running; job 2 waits behind it
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await batcher.submit([2])
        release.set()
        result = await first
        await batcher.stop()
        return result

    assert asyncio.run(scenario()) == [2]
    assert seen == [1]


def test_only_products_sharing_a_store_in_their_request_need_the_first_pass() -> None:
    requests = [[{"store": "s"}, {"store": "t"}, {"store": "s"}], [{"store": "t"}], [{}, {"store": None}]]
    assert shares_a_store(requests) == [True, False, True, False, False, False]
