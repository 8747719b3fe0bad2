"""Tenantry's crypto core: pure functions, no I/O beyond reading a keyring file.

- `keyring`: master key versions (one primary for encryption, older ones still decrypt), loaded
  from a file or a mounted Secret directory, and the pure steps rotation builds on.
- `tenant_keys`: per-tenant AES-256 keys, HKDF-SHA256 from a master key version, bound to the
  Tenant's UID; a public key id that names the key without revealing it.
- `envelope`: the versioned AES-256-GCM format credentials are stored in, bound to their context
  (tenant UID, namespace, credential, field, generation).
- `sealing`: offline hybrid encryption (X25519 + HKDF-SHA256 + AES-256-GCM) to the operator's
  public key, so a sealed Credential can be committed to Git.
- `errors`: the exceptions all of the above raise; none carries plaintext or key bytes.

Every primitive comes from `cryptography`; nothing here implements one.
"""
