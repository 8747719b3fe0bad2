"""`tenantry login`, `audit`, `api-keys` ...: the API's command-line client.

`tokens` keeps a signed-in session in a 0600 file under the user's config directory, `session`
talks to the API (refreshing the access token silently, storing each rotated refresh token),
`cli` is the commands. Nothing here is imported by the servers.
"""
