"""The client against a canned answer: what a unit test of your own code can look like."""

from __future__ import annotations

import httpx

from pytest_bkjobs import JobsClient


def main() -> None:
    """List a build's failed jobs from a canned answer (no token, no network)."""

    def buildkite(request: httpx.Request) -> httpx.Response:
        job = {"id": "0189-a", "name": "Tests", "state": "failed", "exit_status": 1}
        return httpx.Response(200, json={"items": [job], "links": {"self": str(request.url)}})

    with JobsClient(token="t", org="acme", transport=httpx.MockTransport(buildkite)) as client:
        for job in client.iter_jobs("my-pipeline", 42, state="failed"):
            print(job.id, job.display_name, job.state, job.exit_status)


if __name__ == "__main__":
    main()
