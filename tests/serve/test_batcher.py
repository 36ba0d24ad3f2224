"""The batcher on its own: what arrives together goes to one call, only equal keys share a call, ``max_batch`` caps a
call, an error reaches every request of its batch, and a cancelled request is not computed."""

import asyncio
import threading

import pytest

from safealign.serve.batcher import Batcher


class Recorder:
    """A batch function that records each call's key and items, and answers item * 10."""

    def __init__(self, fail_on=None):
        self.calls, self.threads, self.fail_on = [], set(), fail_on

    def __call__(self, key, items):
        self.calls.append((key, list(items)))
        self.threads.add(threading.current_thread().name)
        if self.fail_on in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]


def run(coro):
    return asyncio.run(coro)


def test_items_that_arrive_together_share_one_call_per_key():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, window_s=0.05)

    async def main():
        jobs = [b.submit("a", 1), b.submit("b", 2), b.submit("a", 3), b.submit("b", 4), b.submit("a", 5)]
        out = await asyncio.gather(*jobs)
        await b.close()
        return out

    assert run(main()) == [10, 20, 30, 40, 50]
    assert rec.calls == [("a", [1, 3, 5]), ("b", [2, 4])]  # oldest key first, arrival order kept
    assert (b.calls, b.items) == (2, 5)
    assert rec.threads == {"safealign-batch_0"}  # one worker thread, not the event loop's


def test_max_batch_caps_a_call_and_the_rest_follow():
    rec = Recorder()
    b = Batcher(rec, max_batch=2, window_s=0.05)

    async def main():
        out = await asyncio.gather(*(b.submit(None, i) for i in range(5)))
        await b.close()
        return out

    assert run(main()) == [0, 10, 20, 30, 40]
    assert [items for _, items in rec.calls] == [[0, 1], [2, 3], [4]]


def test_an_error_reaches_its_batch_only_and_the_loop_goes_on():
    rec = Recorder(fail_on=2)
    b = Batcher(rec, max_batch=8, window_s=0.02)

    async def main():
        first = await asyncio.gather(b.submit("x", 1), b.submit("x", 2), return_exceptions=True)
        second = await b.submit("x", 3)
        await b.close()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, ValueError) for e in first)
    assert second == 30


def test_a_cancelled_request_is_not_computed():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, window_s=0.1)

    async def main():
        gone = asyncio.ensure_future(b.submit(None, 1))
        kept = asyncio.ensure_future(b.submit(None, 2))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client went away while the batch was still forming
        out = await kept
        await b.close()
        return out

    assert run(main()) == 20
    assert rec.calls == [(None, [2])]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch=0)
