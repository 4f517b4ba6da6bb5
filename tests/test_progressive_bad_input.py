"""Hostile input to issue 19's management routes: always a 4xx problem, never a 500."""

from __future__ import annotations

from harness import ServerProcess, create_project


def test_hostile_input_gets_4xx_problems(server: ServerProcess, unique: str) -> None:
    slug = f"hostile-{unique}"
    with server.client() as client:
        create_project(client, slug)
        hooks = f"/api/v1/projects/{slug}/webhooks"
        plan = "/api/v1/updates/x/rollout-plan"
        published = ["update.published"]
        cases = [
            ("POST", hooks, {"url": "http://[::1", "events": ["update.published"]}),
            ("POST", hooks, {"url": "http://x:99999/", "events": ["update.published"]}),
            ("POST", hooks, {"url": "http://" + "a" * 300 + ".com/", "events": published}),
            ("POST", hooks, {"url": "http://exa\u0000mple.com/", "events": ["update.published"]}),
            ("POST", hooks, {"url": 5, "events": ["update.published"]}),
            ("POST", hooks, {"url": "https://93.184.215.14/", "events": [["x"]]}),
            ("POST", hooks, {"url": "https://93.184.215.14/", "events": ["update.published"] * 11}),
            ("POST", hooks, [1, 2]),
            ("GET", f"{hooks}/nope/deliveries?limit=0", None),
            ("GET", f"{hooks}/nope/deliveries", None),
            ("POST", f"{hooks}/nope/deliveries/x/redeliver", None),
            ("DELETE", f"{hooks}/nope", None),
            ("PUT", f"/api/v1/projects/{slug}/devices/a%00b", {"channel": "production"}),
            ("PUT", f"/api/v1/projects/{slug}/devices/qa", {"channel": ["production"]}),
            ("PUT", f"/api/v1/projects/{slug}/devices/qa", {"channel": "x" * 101}),
            ("DELETE", f"/api/v1/projects/{slug}/devices/nobody", None),
            ("GET", f"/api/v1/projects/{slug}/devices/" + "x" * 300, None),
            ("PUT", plan.replace("/x/", "/" + "x" * 300 + "/"), {"steps": [1], "stepSeconds": 1}),
            ("PUT", "/api/v1/updates/x/rollout-plan", {"steps": [1] * 21, "stepSeconds": 1}),
            ("PUT", "/api/v1/updates/x/rollout-plan", {"steps": [1], "stepSeconds": 10**12}),
            ("PUT", plan, {"steps": [1], "stepSeconds": 1, "maxFailureRate": "NaN"}),
            ("POST", "/api/v1/updates/x/rollout-plan/resume", None),
            ("DELETE", "/api/v1/updates/x/rollout-plan", None),
            ("GET", "/api/v1/updates/x/rollout-plan", None),
        ]  # fmt: skip
        for method, url, body in cases:
            resp = client.request(method, url, json=body)
            assert 400 <= resp.status_code < 500, (method, url, body, resp.status_code, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json"), url
