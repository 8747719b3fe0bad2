"""Ed25519-signed checkpoints of every chain head, and verification against them.

The hash chain makes tampering evident to anyone who trusts the chain's end. A superuser can
still rewrite a whole chain (or cut its tail) with fresh, consistent hashes and move the head
along: the chain then verifies. A checkpoint closes that gap: it records each chain's head
(seq, hash) at a moment, signed with a key the database never holds, and is exported outside
the database (JSON lines). Later, any row set that disagrees with a checkpoint at a signed
position — the entry missing (truncated, deleted) or carrying another hash (rewritten) — fails.

Signed bytes: the RFC 8785 canonical JSON of the payload::

    {"v": 1, "type": "tenantry.ledger.checkpoint", "created_at": "<event_time format>",
     "key_id": "<16 hex>", "heads": [{"chain": ..., "seq": ..., "hash": ...}, ...]}

with heads sorted by chain name. `key_id` is the first 16 hex digits of SHA-256 over the raw
32-byte public key; the signature is base64 (standard alphabet, padded).

Checkpoints are also stored in `ledger.checkpoints` (append-only, like the log), which is
convenient but not sufficient: the copies that count are the ones exported elsewhere.

A checkpoint vouches for what it signs, so `create_checkpoint` first verifies every chain, and
every earlier checkpoint it is given or finds stored under the same key, in the snapshot it then
signs from: a broken or rewritten chain is refused (`UnverifiedLedgerError`), never signed into
a fresh, valid-looking checkpoint that would launder the damage.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tenantry.ledger import export, hashing, verify

CHECKPOINT_TYPE = "tenantry.ledger.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or key is malformed."""


def public_key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """A short, stable name for a public key: 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A signed statement "at `created_at`, these were the chain heads"."""

    created_at: str
    key_id: str
    heads: tuple[verify.ChainHead, ...]
    signature: str
    id: int | None = None
    """The row id in `ledger.checkpoints`, when read from or stored in the database."""

    def payload(self) -> dict[str, Any]:
        """The signed object (see the module docstring)."""
        return {
            "v": CHECKPOINT_VERSION,
            "type": CHECKPOINT_TYPE,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "heads": [{"chain": h.chain, "seq": h.seq, "hash": h.hash} for h in self.heads],
        }

    def signed_bytes(self) -> bytes:
        return hashing.canonical_json(self.payload())

    def signature_valid(self, public_key: ed25519.Ed25519PublicKey) -> bool:
        """Whether `public_key` signed exactly this payload."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
            public_key.verify(signature, self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "payload": self.payload(), "signature": self.signature}

    def to_json_line(self) -> str:
        return hashing.canonical_json(self.to_json()).decode()

    @classmethod
    def from_parts(cls, payload: Mapping[str, Any], signature: str,
                   checkpoint_id: int | None = None) -> Checkpoint:
        """From a payload object and its signature; CheckpointError when malformed."""
        try:
            if payload["v"] != CHECKPOINT_VERSION or payload["type"] != CHECKPOINT_TYPE:
                raise CheckpointError("not a version 1 Tenantry ledger checkpoint")
            heads = tuple(
                verify.ChainHead(chain=str(h["chain"]), seq=int(h["seq"]), hash=str(h["hash"]))
                for h in payload["heads"])
            return cls(created_at=str(payload["created_at"]), key_id=str(payload["key_id"]),
                       heads=heads, signature=str(signature), id=checkpoint_id)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"malformed checkpoint: {error!r}") from None

    @classmethod
    def from_json_line(cls, line: str) -> Checkpoint:
        data = hashing.parse_json(line)
        if not isinstance(data, dict):
            raise CheckpointError("a checkpoint line must be a JSON object")
        try:
            return cls.from_parts(data["payload"], data["signature"], data.get("id"))
        except KeyError as error:
            raise CheckpointError(f"checkpoint line lacks {error}") from None


def sign(heads: Iterable[verify.ChainHead], created_at: str,
         private_key: ed25519.Ed25519PrivateKey) -> Checkpoint:
    """A checkpoint of `heads` (sorted by chain) signed with `private_key`."""
    unsigned = Checkpoint(
        created_at=created_at, key_id=public_key_id(private_key.public_key()),
        heads=tuple(sorted(heads, key=lambda h: h.chain.encode())), signature="")
    signature = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode()
    return dataclasses.replace(unsigned, signature=signature)


class UnverifiedLedgerError(Exception):
    """The ledger did not verify, so no checkpoint was signed; `report` says where it broke."""

    def __init__(self, report: CheckpointReport) -> None:
        self.report = report
        super().__init__("; ".join(report.describe()))


async def create_checkpoint(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                            private_key: ed25519.Ed25519PrivateKey, *,
                            previous: Sequence[Checkpoint] | None = None,
                            public_keys: Sequence[ed25519.Ed25519PublicKey] = (),
                            ) -> Checkpoint:
    """Verify, then sign every chain head as of now, store the checkpoint and return it.

    Before signing, every chain is walked and checked against `previous` checkpoints (default:
    those stored in the database under this signing key; checkpoints of other keys need their
    key in `public_keys`), in the same snapshot the heads are read from, so nothing unverified
    is signed. `UnverifiedLedgerError` (nothing stored) when any of it fails.
    """
    keys = [private_key.public_key(), *public_keys]
    async with export.connection(conn_or_pool) as conn:
        async with export.snapshot(conn):
            created = await conn.fetchval("SELECT now()")
            if previous is None:
                own = public_key_id(private_key.public_key())
                previous = [c for c in await load_checkpoints(conn) if c.key_id == own]
            report = await _verify_in_snapshot(conn, CheckpointVerifier(previous, keys), None)
            if not report.ok:
                raise UnverifiedLedgerError(report)
            rows = await conn.fetch(
                "SELECT chain, seq, hash FROM ledger.chain_heads WHERE seq > 0")
        checkpoint = sign(
            (verify.ChainHead(chain=r["chain"], seq=r["seq"], hash=r["hash"]) for r in rows),
            hashing.format_event_time(created), private_key)
        checkpoint_id = await conn.fetchval(
            "INSERT INTO ledger.checkpoints (key_id, payload, signature) "
            "VALUES ($1, $2::jsonb, $3) RETURNING id",
            checkpoint.key_id, hashing.canonical_json(checkpoint.payload()).decode(),
            checkpoint.signature)
    return dataclasses.replace(checkpoint, id=checkpoint_id)


async def load_checkpoints(conn_or_pool: asyncpg.Connection | asyncpg.Pool) -> list[Checkpoint]:
    """The checkpoints stored in the database, oldest first."""
    rows = await conn_or_pool.fetch(
        "SELECT id, payload, signature FROM ledger.checkpoints ORDER BY id")
    return [Checkpoint.from_parts(hashing.parse_json(r["payload"]), r["signature"], r["id"])
            for r in rows]


def read_checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """Parse exported checkpoints (JSON lines); CheckpointError names a malformed line."""
    out = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(Checkpoint.from_json_line(line))
            except ValueError as error:
                raise CheckpointError(f"checkpoint line {number}: {error}") from None
    return out


# -- keys ----------------------------------------------------------------------------------------

def generate_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def write_key_pair(private_key: ed25519.Ed25519PrivateKey, private_path: Path,
                   public_path: Path) -> None:
    """Write PKCS#8 / SubjectPublicKeyInfo PEM files; the private one readable by owner only."""
    pem = private_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    # O_EXCL: never overwrite a signing key; 0600 from the first byte, not chmod afterwards.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key")
    return key


# -- verification --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CheckpointFailure:
    """One disagreement: a bad signature, an entry that contradicts a checkpoint, a broken chain."""

    reason: str
    chain: str | None = None
    seq: int | None = None
    checkpoint_id: int | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointReport:
    """The outcome of verifying rows against checkpoints."""

    ok: bool
    checkpoints: int
    """Checkpoints whose signature verified and whose heads were checked."""
    anchors: int
    """Signed (chain, seq, hash) positions that were checked."""
    chains: tuple[verify.VerifyResult, ...]
    failures: tuple[CheckpointFailure, ...]

    def describe(self) -> list[str]:
        """Lines for humans: the failures, or a one-line summary."""
        if self.ok:
            return [f"checkpoints: ok, {self.checkpoints} checkpoints, {self.anchors} signed "
                    f"heads match, {len(self.chains)} chains verified"]
        return [f"checkpoints: FAILED: chain {f.chain} seq {f.seq}: {f.reason}"
                if f.chain is not None else f"checkpoints: FAILED: {f.reason}"
                for f in self.failures]


class CheckpointVerifier:
    """Incremental: `feed` rows (each chain in order), then `report`."""

    def __init__(self, checkpoints: Sequence[Checkpoint],
                 public_keys: ed25519.Ed25519PublicKey | Sequence[ed25519.Ed25519PublicKey],
                 chains: Iterable[str] | None = None) -> None:
        keys = [public_keys] if isinstance(public_keys, ed25519.Ed25519PublicKey) else public_keys
        by_id = {public_key_id(key): key for key in keys}
        self._only = None if chains is None else set(chains)
        self._failures: list[CheckpointFailure] = []
        self._verifiers: dict[str, verify.ChainVerifier] = {}
        # (chain, seq) -> [(signed hash, checkpoint id or created_at)], still to be matched.
        self._anchors: dict[tuple[str, int], list[tuple[str, Checkpoint]]] = {}
        self.checkpoints = 0
        self.anchor_count = 0
        for checkpoint in checkpoints:
            key = by_id.get(checkpoint.key_id)
            if key is None or not checkpoint.signature_valid(key):
                # Fail closed: a checkpoint that does not verify is evidence of tampering (or of
                # the wrong key), never something to skip quietly.
                self._failures.append(CheckpointFailure(
                    reason=f"checkpoint of {checkpoint.created_at} has no valid signature by "
                           "the given public key(s)", checkpoint_id=checkpoint.id))
                continue
            self.checkpoints += 1
            for head in checkpoint.heads:
                if head.seq > 0 and (self._only is None or head.chain in self._only):
                    self._anchors.setdefault((head.chain, head.seq), []).append(
                        (head.hash, checkpoint))
                    self.anchor_count += 1

    def feed(self, row: hashing.LedgerRow) -> None:
        if self._only is not None and row.chain not in self._only:
            return
        verifier = self._verifiers.get(row.chain)
        if verifier is None:
            verifier = self._verifiers[row.chain] = verify.ChainVerifier(row.chain)
        verifier.feed(row)
        for signed_hash, checkpoint in self._anchors.pop((row.chain, row.seq), ()):
            if signed_hash != row.hash:
                self._failures.append(CheckpointFailure(
                    reason=f"entry differs from the one signed at {checkpoint.created_at}: the "
                           "chain was rewritten", chain=row.chain, seq=row.seq,
                    checkpoint_id=checkpoint.id))

    def report(self, heads: Mapping[str, verify.ChainHead | None] | None = None,
               ) -> CheckpointReport:
        """The verdict; with `heads` (from the database) each chain's head is checked too."""
        results = []
        for chain in sorted(self._verifiers.keys() | (heads or {}).keys()):
            verifier = self._verifiers.get(chain) or verify.ChainVerifier(chain)
            result = (verifier.finish() if heads is None
                      else verifier.finish_with_head(heads.get(chain)))
            results.append(result)
        failures = list(self._failures)
        failures += [CheckpointFailure(reason=r.reason or "", chain=r.chain,
                                       seq=r.first_broken_seq) for r in results if not r.ok]
        for (chain, seq), signed in sorted(self._anchors.items()):
            failures += [CheckpointFailure(
                reason=f"entry signed at {checkpoint.created_at} is missing: the chain was "
                       "truncated or the entry deleted", chain=chain, seq=seq,
                checkpoint_id=checkpoint.id) for _, checkpoint in signed]
        return CheckpointReport(ok=not failures, checkpoints=self.checkpoints,
                                anchors=self.anchor_count, chains=tuple(results),
                                failures=tuple(failures))


def verify_against_checkpoints(
        rows: Iterable[hashing.LedgerRow], checkpoints: Sequence[Checkpoint],
        public_key: ed25519.Ed25519PublicKey | Sequence[ed25519.Ed25519PublicKey], *,
        chains: Iterable[str] | None = None) -> CheckpointReport:
    """Verify rows (e.g. an export) both as chains and against signed checkpoints (pure).

    Every chain in `rows` must verify on its own, and every signed head must be matched by the
    row at that position with that hash. `chains` restricts both checks to those chains.
    """
    verifier = CheckpointVerifier(checkpoints, public_key, chains)
    for row in rows:
        verifier.feed(row)
    return verifier.report()


async def verify_db_against_checkpoints(
        conn_or_pool: asyncpg.Connection | asyncpg.Pool, checkpoints: Sequence[Checkpoint],
        public_key: ed25519.Ed25519PublicKey | Sequence[ed25519.Ed25519PublicKey], *,
        chains: Iterable[str] | None = None) -> CheckpointReport:
    """`verify_against_checkpoints` over the database, streaming, plus each chain's head row."""
    wanted = None if chains is None else list(chains)
    verifier = CheckpointVerifier(checkpoints, public_key, wanted)
    async with export.connection(conn_or_pool) as conn, export.snapshot(conn):
        return await _verify_in_snapshot(conn, verifier, wanted)


async def _verify_in_snapshot(conn: asyncpg.Connection, verifier: CheckpointVerifier,
                              wanted: Sequence[str] | None) -> CheckpointReport:
    heads: dict[str, verify.ChainHead | None] = {}
    for chain in wanted if wanted is not None else await export.list_chains(conn):
        heads[chain] = await verify.read_head(conn, chain)
        async for row in export.iter_rows(conn, chain):
            verifier.feed(row)
    return verifier.report(heads)
