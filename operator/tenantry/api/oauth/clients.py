"""One client per configured provider, by name: `OidcClient` or, for the GitHub preset,
`GitHubClient`. Empty when the API runs without `--oauth-config` (password login only)."""

from __future__ import annotations

from tenantry.api.oauth.client import CodeFlowClient, OidcClient
from tenantry.api.oauth.github import GitHubClient
from tenantry.api.oauth.providers import Config


class Clients:
    def __init__(self, config: Config | None) -> None:
        self.config = config
        self.clients: dict[str, CodeFlowClient] = {}
        if config is None:
            return
        for name, provider in config.providers.items():
            kind = GitHubClient if provider.kind == "github" else OidcClient
            self.clients[name] = kind(provider, config.redirect_uri(name))

    def get(self, name: str) -> CodeFlowClient | None:
        return self.clients.get(name)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
