"""HTTP client of a Kempelen relay: Sign-In with Ethereum, uploads, tasks, leases, answers, receipts."""

from __future__ import annotations

import base64
import io
import json
import time
from datetime import UTC, datetime

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from kempelen.errors import KempelenError
from kempelen.ipfs.car import CarReader
from kempelen.ipfs.dag import iter_file
from kempelen.protocol.cid import CID
from kempelen.protocol.signing import answer_digest
from kempelen.sdk.answers import SignedAnswer
from kempelen.sdk.keys import Signer

RATE_LIMIT_RETRIES = 5


class RelayError(KempelenError):
    """The relay refused a request; `status` and `code` say how (see docs/relay.md)."""

    def __init__(self, status: int, code: str, detail: str, body: dict | None = None):
        super().__init__(f"relay said {status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body or {}


def siwe_text(domain: str, address: str, uri: str, chain_id: int, nonce: str, issued_at: datetime,
              statement: str = "Sign in to the Kempelen relay.") -> str:
    """An EIP-4361 message, exactly as the wallet signs it."""
    stamp = issued_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return (f"{domain} wants you to sign in with your Ethereum account:\n{address}\n\n{statement}\n\n"
            f"URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {stamp}")


class RelayClient:
    def __init__(self, base_url: str, signer: Signer | None = None, *, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, ok=(200,), **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code == 401 and self.signer and "Authorization" not in self.http.headers:
            self.login()
            response = self.http.request(method, path, **kwargs)
        for _ in range(RATE_LIMIT_RETRIES):
            if response.status_code != 429:
                break
            time.sleep(min(float(response.headers.get("retry-after", "1")), 30))  # over the relay's rate
            response = self.http.request(method, path, **kwargs)
        if response.status_code not in ok:
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = body.get("error", "http_error") if isinstance(body, dict) else "http_error"
            detail = body.get("detail", response.text[:300]) if isinstance(body, dict) else response.text[:300]
            raise RelayError(response.status_code, code, str(detail), body if isinstance(body, dict) else None)
        return response

    def login(self) -> str:
        """Sign in with Ethereum; later requests carry the session token."""
        if self.signer is None:
            raise KempelenError("signing in to the relay needs a key")
        offer = self._call("POST", "/auth/nonce").json()
        text = siwe_text(offer["domain"], self.signer.address, self.base_url, offer["chain_id"],
                         offer["nonce"], datetime.now(UTC))
        signed = Account.sign_message(encode_defunct(text=text), self.signer.private_key)
        session = self._call("POST", "/auth/login",
                             json={"message": text, "signature": "0x" + bytes(signed.signature).hex()}).json()
        self.http.headers["Authorization"] = f"Bearer {session['token']}"
        return session["token"]

    def _authed(self) -> None:
        if "Authorization" not in self.http.headers:
            self.login()

    # -- requesters --------------------------------------------------------------------------

    def upload(self, payload: bytes, kind: str = "task") -> CID:
        self._authed()
        reply = self._call("POST", "/payloads", ok=(201,), params={"kind": kind}, content=payload,
                           headers={"content-type": "application/octet-stream"})
        return CID.parse(reply.json()["cid"])

    def batch(self, batch_id: int) -> dict:
        return self._call("GET", f"/batches/{batch_id}").json()

    def signed_answers(self, batch_id: int) -> list[dict]:
        """Every answer of your batch at this relay, with status, payload and worker signature."""
        self._authed()
        response = self._call("GET", f"/batches/{batch_id}/answers")
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    # -- settlements (docs/settlement.md) ------------------------------------------------------

    def post_settlement(self, body: dict) -> dict:
        """Queue a signed settlement for the relay to post; returns its job ({"job_id", ...})."""
        return self._call("POST", "/settlements", ok=(202,), json=body).json()

    def settlement(self, batch_id: int, worker: str | None = None) -> dict | None:
        """The batch's latest settlement (with `worker`'s settled/claimed amounts), or None."""
        try:
            return self._call("GET", f"/settlements/{batch_id}",
                              params={"worker": worker} if worker else None).json()
        except RelayError as exc:
            if exc.status == 404 and exc.code == "not_found":
                return None
            raise

    def post_claims(self, claims: list[dict]) -> dict:
        """Queue claimMany of the signed-in worker's earnings; returns its job."""
        self._authed()
        return self._call("POST", "/claims", ok=(202,), json={"claims": claims}).json()

    def job(self, job_id: int) -> dict:
        return self._call("GET", f"/jobs/{job_id}").json()

    def wait_job(self, job_id: int, timeout: float = 120) -> dict:
        """Poll a relayed transaction until it is mined or failed; raises RelayError on failure."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] == "mined":
                return job
            if job["status"] == "failed":
                raise RelayError(200, "job_failed", f"the relay's {job['kind']} transaction failed: {job['error']}",
                                 job)
            if time.monotonic() > deadline:
                raise KempelenError(f"the relay has not sent job {job_id} within {timeout:.0f}s "
                                    f"(status {job['status']}): is its submitter running?")
            time.sleep(0.2)

    # -- workers -----------------------------------------------------------------------------

    def open_tasks(self, batch_id: int | None = None, limit: int = 50) -> list[dict]:
        self._authed()
        params = {"limit": limit, **({"batch_id": batch_id} if batch_id else {})}
        return self._call("GET", "/tasks/open", params=params).json()["tasks"]

    def task(self, batch_id: int, task_index: int) -> dict:
        return self._call("GET", f"/tasks/{batch_id}/{task_index}").json()

    def lease(self, batch_id: int, task_index: int) -> dict:
        self._authed()
        return self._call("POST", "/leases", ok=(201,), json={"batch_id": batch_id, "task_index": task_index}).json()

    def release_lease(self, batch_id: int, task_index: int) -> None:
        """Give a leased slot back before the lease runs out."""
        self._authed()
        self._call("DELETE", f"/leases/{batch_id}/{task_index}", ok=(204, 404))

    def payload(self, batch_id: int, task_index: int) -> bytes:
        """A task's payload, checked here against its CID: the relay is not trusted with content."""
        cid = CID.parse(self.task(batch_id, task_index)["payload_cid"])
        content = self._call("GET", f"/tasks/{batch_id}/{task_index}/payload").content
        if cid.codec_name != "raw" or answer_digest(content) != cid.digest:
            # Multi-block payloads: fetch as CAR from the gateway and verify block by block.
            content = self.fetch(str(cid))
        return content

    def fetch(self, cid: str) -> bytes:
        """Any content by CID through the relay's trustless gateway, every block verified."""
        raw = self._call("GET", f"/ipfs/{cid}", params={"format": "car"}).content
        blocks = dict(CarReader(io.BytesIO(raw)).blocks())  # each block checked against its CID
        try:
            return b"".join(iter_file(blocks.__getitem__, CID.parse(cid)))
        except KeyError as missing:
            raise KempelenError(f"the relay's CAR for {cid} lacks block {missing}") from None

    def post_answer(self, signed: SignedAnswer) -> dict:
        """Post a signed answer; returns its receipt (the original one if already posted)."""
        body = {"batch_id": signed.answer.batch_id, "task_index": signed.answer.task_index,
                "worker": signed.answer.worker, "payload": base64.b64encode(signed.payload).decode(),
                "signature": "0x" + signed.signature.hex(), "answer_digest": "0x" + signed.answer.answer_digest.hex()}
        try:
            return self._call("POST", "/answers", ok=(202,), json=body).json()
        except RelayError as exc:
            if exc.status == 409 and "receipt" in exc.body:
                return exc.body["receipt"]
            raise

    def receipt(self, receipt_id: str) -> dict:
        return self._call("GET", f"/receipts/{receipt_id}").json()

    def my_answers(self) -> list[dict]:
        self._authed()
        answers, after = [], 0
        while True:
            page = self._call("GET", "/workers/me/answers", params={"after": after, "limit": 1000}).json()
            answers += page["answers"]
            if page["next"] is None:
                return answers
            after = page["next"]

    def earnings(self, address: str) -> dict:
        return self._call("GET", f"/workers/{address}/earnings").json()

    def health(self) -> dict:
        return self._call("GET", "/health").json()
