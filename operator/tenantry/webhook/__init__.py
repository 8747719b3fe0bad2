"""The admission webhook server: `tenantry webhook run`.

The rules are pure and live in `tenantry.admission`; this package is the shell that serves them to
the apiserver over TLS, and keeps what that needs in shape:

- `review`: AdmissionReview v1 in and out (pure): parsing (malformed -> 400), verdicts, responses.
- `routes`: what a route is (path, handler, the webhook entry that sends requests to it).
- `configuration`: the ValidatingWebhookConfiguration built from the routes (pure).
- `certs`: the CA and serving certificate, when to rotate them, the Secret they live in (pure).
- `directory`: which tenant a namespace belongs to, from watched caches with a GET fallback.
- `workloads`, `credentials`: the handlers; `records`: the hook where decisions go (ledger).
- `tls`: keeps certificates, Secret, caBundle and the server's SSL context in step (I/O).
- `server`: the aiohttp application; `run`: wires it all; `cli`: `tenantry webhook ...`.
"""
