"""Locked by default: model control, admin and API keys, TLS, request limits, hang-ups, deadlines.

Against real ``duh serve`` processes and the stock tritonclient (HTTP and gRPC).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography")

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from duh.serve._batcher import BatchConfig, Batcher, Pending
from duh.serve._errors import UnavailableError
from tests.serve.test_batcher import Recorder

ADMIN = "admin-key-0123456789"
API = "api-key-0123456789ab"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _scale_input(module: object, rows: int = 2, cols: int = 3) -> object:
    tensor = module.InferInput("x", [rows, cols], "FP32")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.ones((rows, cols), dtype=np.float32))
    return tensor


def test_by_default_model_control_is_off_and_limits_hold(start_server, serve_models) -> None:
    server = start_server(f"scale={serve_models['scale']}", f"strings={serve_models['strings']}",
                          "--grpc-port", "0", "--max-elements", "100", "--max-string-bytes", "8")
    for action in ("load", "unload"):
        status, body = server.post_json(f"/v2/repository/models/scale/{action}", {})
        assert status == 403 and "--model-control explicit" in body["error"]
    grpc = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException, match="model control is off") as info:
        grpc.unload_model("scale")
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert grpc.is_model_ready("scale")
    http = httpclient.InferenceServerClient(server.address)
    got = http.infer("scale", [_scale_input(httpclient, 2, 50)]).as_numpy("y")
    np.testing.assert_array_equal(got, np.full((2, 50), 2.0, np.float32))
    with pytest.raises(InferenceServerException, match=r"101 elements, more than .* 100"):
        http.infer("scale", [_scale_input(httpclient, 1, 101)])
    with pytest.raises(InferenceServerException, match="101 elements"):
        grpc.infer("scale", [_scale_input(grpcclient, 1, 101)])
    words = grpcclient.InferInput("s", [2], "BYTES")
    words.set_data_from_numpy(np.array([b"short", b"much too long"], dtype=object))
    with pytest.raises(InferenceServerException, match="string of 13 bytes"):
        grpc.infer("strings", [words])
    assert server.stop() == 0


def test_keys_and_tls_over_http_and_grpc(start_server, serve_models, tls_files) -> None:
    cert, key = tls_files
    server = start_server(f"scale={serve_models['scale']}", "--grpc-port", "0",
                          "--model-control", "explicit", "--admin-key", ADMIN,
                          "--api-key", API, "--tls-cert", cert, "--tls-key", key)
    assert "https://" in server.log()
    context = ssl.create_default_context(cafile=str(cert))
    http = httpclient.InferenceServerClient(server.address, ssl=True,
                                            ssl_context_factory=lambda: context)
    grpc = grpcclient.InferenceServerClient(server.grpc, ssl=True,
                                            root_certificates=str(cert))
    auth = {"authorization": f"Bearer {API}"}
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        with pytest.raises(InferenceServerException, match="needs its API key"):
            client.infer("scale", [_scale_input(module)])
        with pytest.raises(InferenceServerException, match="needs its API key"):
            client.infer("scale", [_scale_input(module)], headers={"authorization": "Bearer no"})
        # (tritonclient.http adds its own entries to the dict it is given: pass a copy)
        got = client.infer("scale", [_scale_input(module)], headers=dict(auth)).as_numpy("y")
        np.testing.assert_array_equal(got, np.full((2, 3), 2.0, np.float32))
        with pytest.raises(InferenceServerException, match="needs the server's admin key"):
            client.unload_model("scale", headers={"admin-key": "wrong-key-0123456789"})
    assert http.is_model_ready("scale")  # health and metadata stay open
    grpc.unload_model("scale", headers={"admin-key": ADMIN})
    assert not http.is_model_ready("scale")
    # Plain HTTP to the TLS port gets no answer from the server.
    with pytest.raises(Exception):  # noqa: B017 - the connection fails, however it fails
        server.request("GET", "/v2/health/live")
    assert server.stop() == 0


def test_a_short_admin_key_or_one_without_model_control_is_refused(start_server, serve_models
                                                                   ) -> None:
    with pytest.raises(RuntimeError, match="needs --model-control explicit"):
        start_server(f"scale={serve_models['scale']}", "--admin-key", ADMIN)
    with pytest.raises(RuntimeError, match="shorter than 16"):
        start_server(f"scale={serve_models['scale']}", "--api-key", "short")


def test_a_caller_that_hangs_up_frees_its_queue_slot(serve_models) -> None:
    gate = threading.Event()
    recorder = Recorder(serve_models["scale"], gate)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=1, max_queue_size=1,
                                                         instances=1), loop)
        x = np.ones((1, 3), np.float32)
        running = Pending({"x": x}, 1, (3,), loop.create_future(), None)
        batcher.submit(running)
        await asyncio.to_thread(recorder.entered.wait, 10)  # the engine holds the first
        queued = Pending({"x": x}, 1, (3,), loop.create_future(), None)
        batcher.submit(queued)
        with pytest.raises(UnavailableError, match="queued"):
            batcher.submit(Pending({"x": x}, 1, (3,), loop.create_future(), None))
        queued.future.cancel()  # what a cancelled handler does to the future it awaits
        batcher.withdraw(queued)
        third = Pending({"x": x}, 1, (3,), loop.create_future(), None)
        batcher.submit(third)  # the slot is free again
        gate.set()
        await asyncio.wait_for(asyncio.gather(running.future, third.future), 20)
        assert batcher.close(10)

    asyncio.run(main())
    assert len(recorder.shapes) == 2  # the withdrawn request never ran


def test_a_grpc_call_past_its_deadline_is_not_run(start_server, serve_models) -> None:
    # One instance, busy with three large calls: a call queued behind them with a 50 ms deadline
    # reaches the engine only after its deadline passed, so the server must drop it, not run it.
    # (A deadline of microseconds on an idle server is a race: the server may see 1 ms left.)
    server = start_server(f"heavy={serve_models['heavy']}", "--grpc-port", "0",
                          "--instances", "1", "--max-batch-size", "1")
    grpc = grpcclient.InferenceServerClient(server.grpc)

    def tensor(rows: int) -> grpcclient.InferInput:
        x = grpcclient.InferInput("x", [rows, 256], "FP32")
        x.set_data_from_numpy(np.ones((rows, 256), np.float32))
        return x

    before = grpc.get_inference_statistics("heavy").model_stats[0].inference_count
    answers: list[object] = []
    done = threading.Semaphore(0)

    def answered(result: object, error: object) -> None:
        answers.append(error or result)
        done.release()

    blockers, rows = 3, 2048
    for _ in range(blockers):
        grpc.async_infer("heavy", [tensor(rows)], answered)
    threading.Event().wait(0.3)  # the blockers are queued first
    with pytest.raises(InferenceServerException) as info:
        grpc.infer("heavy", [tensor(1)], client_timeout=0.05)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    for _ in range(blockers):
        assert done.acquire(timeout=120)
    assert not any(isinstance(a, InferenceServerException) for a in answers), answers
    grpc.infer("heavy", [tensor(1)])
    after = grpc.get_inference_statistics("heavy").model_stats[0].inference_count
    assert after - before == blockers * rows + 1  # the call past its deadline never ran
    assert server.stop() == 0


def test_require_signed_serves_only_signed_artifacts(start_server, serve_models, tmp_path: Path
                                                     ) -> None:
    import shutil

    from duh.runtime import generate_keypair, sign_artifact

    private, public = generate_keypair(tmp_path / "k.pem")
    signed = tmp_path / "light.duh"
    shutil.copytree(serve_models["light"], signed)
    with pytest.raises(RuntimeError, match="is not signed"):
        start_server(f"light={signed}", "--require-signed", public)
    sign_artifact(signed, private)
    server = start_server(f"light={signed}", "--require-signed", public)
    assert server.request("GET", "/v2/models/light/ready")[0] == 200
    assert server.stop() == 0


def test_a_request_the_engine_fails_on_does_not_fail_its_batch_neighbours(serve_models) -> None:
    import duh
    from duh.serve._errors import InternalServeError

    session = duh.load(serve_models["scale"])
    gate = threading.Event()
    calls: list[int] = []

    def run(instance: int, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert gate.wait(10)
        calls.append(feed["x"].shape[0])
        if (feed["x"] < 0).any():
            raise RuntimeError("engine exploded on a negative input")
        return session.run(feed)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        batcher = Batcher("scale", run, BatchConfig(max_batch_size=8, max_queue_delay_ms=50,
                                                    instances=1), loop)
        rows = [np.full((1, 3), v, np.float32) for v in (1.0, -1.0, 3.0)]
        items = [Pending({"x": x}, 1, (3,), loop.create_future(), None) for x in rows]
        for item in items:
            batcher.submit(item)
        gate.set()
        done = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        np.testing.assert_array_equal(done[0]["y"], 2 * rows[0])
        assert isinstance(done[1], InternalServeError) and "negative input" in str(done[1])
        np.testing.assert_array_equal(done[2]["y"], 2 * rows[2])
        assert batcher.close(10)

    asyncio.run(main())
    assert calls[0] == 3 and calls[1:] == [1, 1, 1]  # the batch, then each alone
