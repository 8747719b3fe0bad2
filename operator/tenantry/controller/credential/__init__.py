"""Credentials: sealed or imported secrets, stored only as envelopes under the tenant's key.

- `custody`: where the operator's keys come from (keyring and sealing key files, reloaded when
  they change) and the ConfigMap that publishes the sealing public key.
- `inputs`: turn a Credential's input into plaintext in memory (unseal `spec.sealed`, read the
  `spec.fromSecret` Secret), or say precisely why not. Pure.
- `ciphertext`: the operator-owned Secret of type `tenantry.dev/encrypted`: its name and
  manifest, and whether what it holds still opens under its context (tamper detection). Pure.
- `reconcile`: decide (pure) and carry out (I/O) one reconciliation; status and audit entries.
- `handlers`: the kopf shell: Credential handlers, a resync timer, and a watch on the
  ciphertext Secrets that re-verifies them when anyone but the operator touches them.

Plaintext lives only in `plaintext.Plaintext` objects, for the length of one reconciliation;
nothing here logs, stores or reports it, and every message is built from public values (names,
field names, key ids, generations, fingerprints).
"""
