"""The start-up self-check: each reach into KServe, Starlette or uvicorn internals
fails loudly, naming its assumption, when that assumption no longer holds."""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
from collections.abc import Callable

import pytest
import uvicorn
from fastapi import FastAPI
from kserve import metrics as kserve_metrics
from kserve import model as kserve_model
from kserve.model import Model
from kserve.protocol.rest.server import TimingMiddleware
from prometheus_client import CollectorRegistry, Histogram
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from predictor.internals import (
    KSERVE_STEP_HISTOGRAMS,
    BrokenAssumptionError,
    ConnectionLimits,
    accept_on_listeners,
    batch_step_histograms,
    drop_request_timing,
    require_configured_loop,
    require_routes_first,
    round_latencies_only_when_logged,
    run_on_configured_loop,
    serve_wrapped,
    use_http_protocol,
    wrap_sigterm,
)
from predictor.metrics import BatchedHistogram

LIMITS = ConnectionLimits(max_header_bytes=65536, max_headers=100, max_pipelined=16)


async def answer() -> dict[str, bool]:
    return {"ready": True}


def test_an_app_without_kserves_timing_middleware_fails_the_check() -> None:
    with pytest.raises(BrokenAssumptionError, match="TimingMiddleware") as raised:
        drop_request_timing(FastAPI())
    assert "kserve 0.21.0" in str(raised.value)


def test_the_timing_middleware_is_dropped_when_kserve_added_it() -> None:
    app = FastAPI()
    app.add_middleware(TimingMiddleware, client=None)
    drop_request_timing(app)
    assert app.user_middleware == []


def test_a_kserve_route_registered_first_fails_the_check() -> None:
    app = FastAPI()
    app.add_api_route("/v2/health/ready", answer, methods=["GET"])
    app.add_api_route("/v2/health/ready", answer, methods=["GET"])
    ours = app.router.routes[-1:]
    with pytest.raises(BrokenAssumptionError, match="registration order"):
        require_routes_first(app, ours)
    require_routes_first(app, app.router.routes[-2:-1])


def test_a_rest_server_without_an_unloaded_uvicorn_config_fails_the_check() -> None:
    with pytest.raises(BrokenAssumptionError, match="_rest_server"):
        use_http_protocol(object(), LIMITS)

    class RestServer:
        config = uvicorn.Config(FastAPI())

    server = RestServer()
    use_http_protocol(server, LIMITS)
    assert isinstance(server.config.http, type)
    assert server.config.http.limits == LIMITS  # type: ignore[attr-defined]


def test_a_sigterm_handler_not_uvicorns_fails_the_check() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(BrokenAssumptionError, match=r"Server\.handle_exit"):
            wrap_sigterm(lambda handler: handler)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_uvicorn_that_starts_requests_otherwise_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class RestServer:
        config = uvicorn.Config(FastAPI())

    def start_request(self: HttpToolsProtocol, cycle: object) -> None:
        """What an upgrade that renamed ``app`` might have."""

    monkeypatch.setattr(HttpToolsProtocol, "_start_asgi_task", start_request)
    with pytest.raises(BrokenAssumptionError, match="_start_asgi_task"):
        use_http_protocol(RestServer(), LIMITS)


def test_a_rest_server_not_running_kserves_app_fails_the_check() -> None:
    class RestServer:
        config = uvicorn.Config("somewhere.else:app")

    with pytest.raises(BrokenAssumptionError, match=r"kserve\.model_server:app"):
        serve_wrapped(RestServer(), lambda app: app)
    with pytest.raises(BrokenAssumptionError, match="_rest_server"):
        serve_wrapped(object(), lambda app: app)


def test_a_server_not_run_in_the_loop_the_policy_made_fails_the_check() -> None:
    class RestServer:
        config = uvicorn.Config(FastAPI(), loop="asyncio")

    async def check() -> None:
        require_configured_loop(policy)

    previous = asyncio.get_event_loop_policy()
    try:
        policy = run_on_configured_loop(RestServer())
        # asyncio.run makes its loop by the policy, as KServe's start does.
        asyncio.run(check())
        elsewhere = asyncio.SelectorEventLoop()
        try:
            with pytest.raises(BrokenAssumptionError, match="asyncio's policy"):
                elsewhere.run_until_complete(check())
        finally:
            elsewhere.close()
    finally:
        asyncio.set_event_loop_policy(previous)
    with pytest.raises(BrokenAssumptionError, match="_rest_server"):
        run_on_configured_loop(object())


def test_a_rest_server_without_a_uvicorn_server_fails_the_check() -> None:
    class RestServer:
        config = uvicorn.Config(FastAPI())

    with pytest.raises(BrokenAssumptionError, match=r"_server\.serve"):
        accept_on_listeners(RestServer(), 4)


def test_the_bound_socket_is_served_through_as_many_descriptors_as_listeners() -> None:
    served: list[list[socket.socket]] = []

    class Server(uvicorn.Server):
        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            assert sockets is not None
            served.append(sockets)

    class RestServer:
        config = uvicorn.Config(FastAPI(), host="127.0.0.1", port=0)
        _server = Server(config)

    rest = RestServer()
    accept_on_listeners(rest, 4)
    asyncio.run(rest._server.serve())
    [sockets] = served
    try:
        assert len({sock.fileno() for sock in sockets}) == 4
        # One socket, bound once: every descriptor has the same address.
        assert len({sock.getsockname() for sock in sockets}) == 1
    finally:
        for sock in sockets:
            sock.close()
    with pytest.raises(BrokenAssumptionError, match="passes no sockets"):
        asyncio.run(rest._server.serve(sockets=[]))


@pytest.fixture
def kserves_histograms(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """KServe's step histograms as KServe makes them, unobserved, in a registry of
    their own; the process's own are put back after the test."""
    registry = CollectorRegistry()
    for name in KSERVE_STEP_HISTOGRAMS:
        histogram = Histogram(
            f"test_{name.lower()}", name, ["model_name"], registry=registry
        )
        monkeypatch.setattr(kserve_model, name, histogram)
        monkeypatch.setattr(kserve_metrics, name, histogram)
    return registry


def test_kserves_step_histograms_are_batched_and_exported_in_their_place(
    kserves_histograms: CollectorRegistry,
) -> None:
    registry = kserves_histograms
    originals = {name: getattr(kserve_model, name) for name in KSERVE_STEP_HISTOGRAMS}
    sample = registry.get_sample_value
    batch_step_histograms(registry)
    batch_step_histograms(registry)
    collectors = set(registry._collector_to_names)
    for name in KSERVE_STEP_HISTOGRAMS:
        batched = getattr(kserve_model, name)
        assert isinstance(batched, BatchedHistogram)
        assert getattr(kserve_metrics, name) is batched
        assert batched.name == originals[name].describe()[0].name
        assert batched.edges == tuple(Histogram.DEFAULT_BUCKETS[:-1])
        assert batched in collectors
        assert originals[name] not in collectors
        child = batched.labels(model_name="a-model")
        assert batched.labels("a-model") is child
        child.observe(0.25)
        assert (
            sample(f"{batched.name}_bucket", {"model_name": "a-model", "le": "0.25"})
            == sample(f"{batched.name}_count", {"model_name": "a-model"})
            == 1
        )


def test_a_step_histogram_with_series_already_is_not_replaced(
    kserves_histograms: CollectorRegistry,
) -> None:
    kserve_model.PRE_HIST_TIME.labels(model_name="a-model").observe(1)
    with pytest.raises(BrokenAssumptionError, match="PRE_HIST_TIME has no series"):
        batch_step_histograms(kserves_histograms)


@pytest.mark.parametrize(
    ("reach", "assumption"),
    [
        (batch_step_histograms, "PRE_HIST_TIME"),
        (functools.partial(round_latencies_only_when_logged, False), "get_latency_ms"),
    ],
    ids=["step histograms", "latency rounding"],
)
def test_a_kserve_whose_model_call_times_its_steps_otherwise_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, reach: Callable[[], None], assumption: str
) -> None:
    async def call(self: Model, body: object) -> object:
        """What an upgrade that timed its steps otherwise might have."""
        return body

    monkeypatch.setattr(Model, "__call__", call)
    with pytest.raises(BrokenAssumptionError, match=assumption):
        reach()


def test_step_latencies_are_rounded_only_for_the_latency_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kserve_model, "get_latency_ms", kserve_model.get_latency_ms)
    start, end = 1.0, 1.000123456789012
    round_latencies_only_when_logged(logged=False)
    assert kserve_model.get_latency_ms(start, end) == (end - start) * 1000
    round_latencies_only_when_logged(logged=True)
    assert kserve_model.get_latency_ms(start, end) == round((end - start) * 1000, 9)
    assert kserve_model.get_latency_ms(start, end) != (end - start) * 1000
