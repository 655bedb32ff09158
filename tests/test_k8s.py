"""deploy/k8s (command/k8s.py, command/k8s_rules.py): every overlay renders with
``kubectl kustomize``, validates strictly against the Kubernetes 1.30 API schemas
(``kubernetes-validate``) and keeps livemesh's rules; an overlay that leaves out a
required setting, or sets a bad one, fails naming it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from command.health import settings_for
from command.k8s import KUBERNETES_VERSION, CheckError, RenderError, check, render, schema_problems
from command.k8s_rules import HOSTNAME, ZONE, rule_problems

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["one-region", "two-regions"]
LATEST_SCHEMAS = "1.37.0"  # the newest kubernetes-validate ships: nothing we use is gone
GRPC_SERVICES = {"registry", "identity", "catalog", "search", "profile", "recommend", "playback",
                 "channels", "experiments"}  # fmt: skip
PACKAGERS = {"packager-demo-a": "a", "packager-demo-b": "b"}  # channel demo's two pipelines

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def one_region() -> list[Doc]:
    return render(K8S / "overlays" / "one-region")


def deployment(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def container(docs: list[Doc], name: str) -> Doc:
    found: Doc = deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]
    return found


@pytest.mark.parametrize(
    ("overlay", "version"),
    [*((o, KUBERNETES_VERSION) for o in OVERLAYS), ("one-region", LATEST_SCHEMAS)],
)
def test_overlay_renders_validates_and_keeps_our_rules(overlay: str, version: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "command.cli", "k8s", "check", str(K8S / "overlays" / overlay),
         "--kubernetes-version", version],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Kubernetes {version}: ok" in done.stdout


def test_the_stack_is_all_there(one_region: list[Doc]) -> None:
    names = {d["metadata"]["name"] for d in one_region if d["kind"] == "Deployment"}
    assert names == GRPC_SERVICES | {"gateway", "origin", *PACKAGERS, "shield", "edge", "qoe"}
    for name in GRPC_SERVICES:  # on mTLS: the kubelet's gRPC probe has no certificate
        probe = container(one_region, name)["readinessProbe"]
        assert probe["exec"]["command"] == ["livemesh", "health"]
    assert container(one_region, "edge")["readinessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = next(d for d in one_region if d["kind"] == "HorizontalPodAutoscaler"
               and d["metadata"]["name"] == "edge")  # fmt: skip
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}
    policies = {d["metadata"]["name"] for d in one_region if d["kind"] == "NetworkPolicy"}
    assert {"default-deny", "shield-ingress", "origin-ingress", "redis-egress"} <= policies
    assert not [d for d in one_region if d["kind"] == "Secret"]


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's podSelector (matchLabels, In expressions) takes ``labels``."""
    selector = policy["spec"]["podSelector"]
    return selector.get("matchLabels", {}).items() <= labels.items() and all(
        e["operator"] == "In" and labels.get(e["key"]) in e["values"]
        for e in selector.get("matchExpressions", [])
    )


def test_the_qoe_processor_runs_on_the_regional_redis_probed_by_its_own_health(
    one_region: list[Doc],
) -> None:
    qoe = container(one_region, "qoe")
    assert qoe["args"][0] == "qoe"
    assert redis_key(one_region, "qoe") == "redis_url"  # the stream the region's edges feed
    # its settings as the process loads them (flags, environment, the mounted ConfigMap)
    settings = settings_for(["qoe", "--redis-url", "redis://r"], {"LIVEMESH_SETTINGS": str(
        K8S / "base" / "settings.toml")}).settings  # fmt: skip
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9090)  # type: ignore[attr-defined]
    (port,) = qoe["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 9090)
    ready, live = qoe["readinessProbe"]["httpGet"], qoe["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    assert {"cpu", "memory"} <= qoe["resources"]["limits"].keys()
    labels = deployment(one_region, "qoe")["spec"]["template"]["metadata"]["labels"]
    policies = {d["metadata"]["name"]: d for d in one_region if d["kind"] == "NetworkPolicy"}
    assert selects(policies["redis-egress"], labels)
    metrics = policies["control-metrics-ingress"]
    assert selects(metrics, labels)
    assert metrics["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9090}]
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert any(d["kind"] == kind and d["metadata"]["name"] == "qoe" for d in one_region)
    # the edges feed its stream: players' CMCD, to the same Redis
    edge = container(one_region, "edge")
    assert edge["args"][edge["args"].index("--qoe") + 1] == "on"
    assert redis_key(one_region, "edge") == "redis_url"
    edge_labels = deployment(one_region, "edge")["spec"]["template"]["metadata"]["labels"]
    assert selects(policies["redis-egress"], edge_labels)


def redis_key(docs: list[Doc], name: str) -> str:
    """Which key of Secret livemesh-secrets gives ``name`` its REDIS_URL."""
    env = next(e for e in container(docs, name)["env"] if e["name"] == "REDIS_URL")
    key: str = env["valueFrom"]["secretKeyRef"]["key"]
    return key


def test_the_vod_store_is_the_regions_bucket_with_the_operators_credentials(
    one_region: list[Doc],
) -> None:
    """Every process with a VOD store (the gateway puts uploads, the catalog publishes,
    the origin serves) reads the one bucket of ConfigMap livemesh-region, its credentials
    from Secret livemesh-secrets."""
    region = next(d for d in one_region if d["metadata"]["name"].startswith("livemesh-region"))
    for name in ("catalog", "gateway", "origin"):
        env = {e["name"]: e.get("valueFrom", e) for e in container(one_region, name)["env"]}
        store = env["LIVEMESH_VOD_STORE"]["configMapKeyRef"]
        assert store["name"] == region["metadata"]["name"] and store["key"] == "vod_store"
        for variable, key in (
            ("AWS_ACCESS_KEY_ID", "vod_store_access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "vod_store_secret_access_key"),
        ):
            assert env[variable]["secretKeyRef"] == {"name": "livemesh-secrets", "key": key}
    assert region["data"]["vod_store"].startswith("s3://")


def test_two_regions_have_their_own_caches_and_redis_but_share_the_global_state() -> None:
    docs = render(K8S / "overlays" / "two-regions")
    for region in ("eu-west", "us-east"):
        mine = [d for d in docs if d["metadata"].get("namespace") == f"livemesh-{region}"]
        region_map = next(d for d in mine if d["kind"] == "ConfigMap"
                          and d["metadata"]["name"].startswith("livemesh-region"))  # fmt: skip
        assert region_map["data"]["region"] == region
        args = container(mine, "edge")["args"]
        assert args[args.index("--parent") + 1] == "http://shield:8080"  # its own region's
        for name in ("origin", *PACKAGERS, "channels", "playback", "qoe"):
            assert redis_key(mine, name) == "redis_url"
        for name in ("identity", "profile", "recommend"):
            assert redis_key(mine, name) == "global_redis_url"


@pytest.mark.parametrize(
    ("overlay", "namespaces"),
    [("one-region", {"livemesh"}), ("two-regions", {"livemesh-eu-west", "livemesh-us-east"})],
)
def test_each_channel_runs_as_two_pipelines_never_on_one_host_and_over_zones(
    overlay: str, namespaces: set[str]
) -> None:
    docs = render(K8S / "overlays" / overlay)
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "Deployment"} == namespaces
    for namespace in namespaces:
        mine = [d for d in docs if d["metadata"].get("namespace") == namespace]
        pods = {name: deployment(mine, name)["spec"]["template"] for name in PACKAGERS}
        for name, pipeline in PACKAGERS.items():
            spec = deployment(mine, name)["spec"]
            assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")  # one writer
            assert container(mine, name)["args"][:4] == ["channel", "demo", "--pipeline", pipeline]
            pod = pods[name]["spec"]
            (apart,) = pod["affinity"]["podAntiAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert apart["topologyKey"] == HOSTNAME
            (spread,) = pod["topologySpreadConstraints"]
            assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == (ZONE, "DoNotSchedule")
            for selector in (apart["labelSelector"], spread["labelSelector"]):
                for other in pods.values():  # selects its peer's pods (and its own)
                    assert selector["matchLabels"].items() <= other["metadata"]["labels"].items()
        (budget,) = [d for d in mine if d["kind"] == "PodDisruptionBudget"
                     and d["metadata"]["name"] == "packager-demo"]  # fmt: skip
        assert budget["spec"]["maxUnavailable"] == 1  # one budget over both: never both evicted
        for pod in pods.values():
            assert (
                budget["spec"]["selector"]["matchLabels"].items()
                <= pod["metadata"]["labels"].items()
            )


def broken(docs: list[Doc], change: Callable[[list[Doc]], None]) -> list[str]:
    copied = copy.deepcopy(docs)
    change(copied)
    return rule_problems(copied)


def test_our_rules_catch_each_breach(one_region: list[Doc]) -> None:
    assert rule_problems(one_region) == []

    def no_probe(docs: list[Doc]) -> None:
        del container(docs, "playback")["livenessProbe"]

    def http_probe_on_grpc(docs: list[Doc]) -> None:
        container(docs, "catalog")["readinessProbe"] = {"httpGet": {"path": "/", "port": 1}}

    def unknown_kind(docs: list[Doc]) -> None:
        container(docs, "search")["args"] = ["serch"]

    def no_limits(docs: list[Doc]) -> None:
        del container(docs, "origin")["resources"]["limits"]

    def root(docs: list[Doc]) -> None:
        del deployment(docs, "gateway")["spec"]["template"]["spec"]["securityContext"]

    def no_anti_affinity(docs: list[Doc]) -> None:
        del deployment(docs, "edge")["spec"]["template"]["spec"]["affinity"]

    def no_zone_spread(docs: list[Doc]) -> None:
        del deployment(docs, "shield")["spec"]["template"]["spec"]["topologySpreadConstraints"]

    def no_pdb(docs: list[Doc]) -> None:
        docs.remove(next(d for d in docs if d["kind"] == "PodDisruptionBudget"
                         and d["metadata"]["name"] == "identity"))  # fmt: skip

    def committed_secret(docs: list[Doc]) -> None:
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "livemesh-secrets"},
                     "stringData": {"token_keys": "k1:00"}})  # fmt: skip

    def no_token_keys(docs: list[Doc]) -> None:
        env = container(docs, "edge")["env"]
        env[:] = [e for e in env if e["name"] != "LIVEMESH_TOKEN_KEYS"]

    def bad_flag(docs: list[Doc]) -> None:
        container(docs, "edge")["args"] += ["--cache-bytes", "-1"]

    def replicas_under_hpa(docs: list[Doc]) -> None:
        deployment(docs, "edge")["spec"]["replicas"] = 3

    def misspelt_settings(docs: list[Doc]) -> None:
        settings = next(d for d in docs if d["metadata"]["name"].startswith("livemesh-settings"))
        text = settings["data"]["settings.toml"].replace("[all]\n", '[all]\nhots = "x"\n')
        settings["data"]["settings.toml"] = text + "\n[edeg]\nport = 1\n"

    def half_tls(docs: list[Doc]) -> None:
        env = container(docs, "edge")["env"]
        env[:] = [e for e in env if e["name"] != "LIVEMESH_TLS_KEY"]

    def plaintext(docs: list[Doc]) -> None:
        env = container(docs, "search")["env"]
        env[:] = [e for e in env if not e["name"].startswith("LIVEMESH_TLS_")]

    def preferred_apart(docs: list[Doc]) -> None:
        anti = deployment(docs, "packager-demo-b")["spec"]["template"]["spec"]["affinity"]
        terms = anti["podAntiAffinity"].pop("requiredDuringSchedulingIgnoredDuringExecution")
        anti["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 100, "podAffinityTerm": terms[0]}
        ]

    def one_pipeline(docs: list[Doc]) -> None:
        docs.remove(deployment(docs, "packager-demo-b"))

    def pipelines_in_one_zone(docs: list[Doc]) -> None:
        del deployment(docs, "packager-demo-a")["spec"]["template"]["spec"][
            "topologySpreadConstraints"
        ]

    def loopback(docs: list[Doc]) -> None:
        container(docs, "profile")["args"] += ["--host", "127.0.0.1"]

    def qoe_metrics_on_loopback(docs: list[Doc]) -> None:
        container(docs, "qoe")["args"] += ["--metrics-host", "127.0.0.1"]

    def qoe_without_redis(docs: list[Doc]) -> None:
        env = container(docs, "qoe")["env"]
        env[:] = [e for e in env if e["name"] != "REDIS_URL"]

    def edge_qoe_without_redis(docs: list[Doc]) -> None:
        env = container(docs, "edge")["env"]
        env[:] = [e for e in env if e["name"] != "REDIS_URL"]

    def no_vod_store(docs: list[Doc]) -> None:
        env = container(docs, "catalog")["env"]
        env[:] = [e for e in env if e["name"] != "LIVEMESH_VOD_STORE"]

    def vod_store_key_committed(docs: list[Doc]) -> None:
        env = container(docs, "origin")["env"]
        env[:] = [e for e in env if e["name"] != "AWS_SECRET_ACCESS_KEY"]
        env.append({"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"})

    cases = {
        no_probe: "Deployment playback (namespace livemesh): container playback: no livenessProbe",
        http_probe_on_grpc: "readinessProbe: a gRPC service on mTLS is probed by exec "
        "['livemesh', 'health']",
        half_tls: "container edge: TLS needs LIVEMESH_TLS_KEY as well",
        plaintext: "livemesh search speaks gRPC: mTLS needs LIVEMESH_TLS_CA",
        unknown_kind: "args ['serch']: not a livemesh server kind",
        no_limits: "container origin: resources.limits needs cpu and memory",
        root: "Deployment gateway (namespace livemesh): pod securityContext.runAsNonRoot",
        no_anti_affinity: "edge pods need pod anti-affinity",
        no_zone_spread: "shield pods need a topology spread constraint over " + ZONE,
        no_pdb: "Deployment identity (namespace livemesh): no PodDisruptionBudget",
        committed_secret: "Secret livemesh-secrets: carries values; Secrets are the operator's",
        no_token_keys: "livemesh edge needs LIVEMESH_TOKEN_KEYS",
        bad_flag: "bad setting cache_bytes = '-1' (from flag --cache-bytes)",
        loopback: "listens on 127.0.0.1: nothing outside the pod reaches it",
        qoe_metrics_on_loopback: "Deployment qoe (namespace livemesh): container qoe: serves "
        "/metrics and its probes on 127.0.0.1",
        qoe_without_redis: "livemesh qoe needs REDIS_URL",
        edge_qoe_without_redis: "container edge: an edge with --qoe on needs REDIS_URL",
        replicas_under_hpa: "Deployment edge (namespace livemesh): sets replicas, which every "
        "apply would reset under HorizontalPodAutoscaler edge",
        misspelt_settings: "settings.toml: no such edeg",
        no_vod_store: "container catalog: livemesh catalog needs LIVEMESH_VOD_STORE = s3://",
        vod_store_key_committed: "container origin: livemesh origin needs AWS_SECRET_ACCESS_KEY "
        "from a Secret",
        preferred_apart: "Deployment packager-demo-b (namespace livemesh): a pipeline needs a "
        f"required pod anti-affinity on {HOSTNAME}",
        one_pipeline: "channel demo (namespace livemesh): runs pipelines a; a channel runs as a, b",
        pipelines_in_one_zone: "Deployment packager-demo-a (namespace livemesh): a pipeline "
        f"needs a topology spread constraint over {ZONE}",
    }  # fmt: skip
    for change, expected in cases.items():
        problems = broken(one_region, change)
        assert any(expected in p for p in problems), (change.__name__, problems)
    assert any(
        "settings.toml: no such [all] hots" in p for p in broken(one_region, misspelt_settings)
    )


def test_the_schemas_are_strict(one_region: list[Doc]) -> None:
    assert schema_problems(one_region, KUBERNETES_VERSION) == []
    docs = copy.deepcopy(one_region)
    container(docs, "edge")["readinesProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    deployment(docs, "origin")["spec"]["replicas"] = "two"
    problems = schema_problems(docs, KUBERNETES_VERSION)
    assert any("Deployment edge" in p and "readinesProbe" in p for p in problems), problems
    assert any("Deployment origin" in p and "spec.replicas" in p for p in problems), problems


def overlay(tmp_path: Path, body: str) -> Path:
    """A region overlay of the real base, written by an operator."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: livemesh-test\nresources:\n  - {os.path.relpath(K8S / 'base', tmp_path)}\n"
        f"{body}"
    )
    return tmp_path


def test_an_overlay_missing_a_region_setting_fails_naming_it(tmp_path: Path) -> None:
    # the region is named but the URL players are handed is not
    path = overlay(
        tmp_path,
        "configMapGenerator:\n  - name: livemesh-region\n    literals:\n      - region=ap-south\n",
    )
    count, problems = check(path)
    assert count > 0
    assert any(
        "Deployment edge (namespace livemesh-test): container edge: env LIVEMESH_EDGE_PUBLIC_URL "
        "needs key 'edge_public_url' of ConfigMap livemesh-region" in p
        for p in problems
    ), problems
    assert any(
        "container catalog: env LIVEMESH_VOD_STORE needs key 'vod_store' of ConfigMap "
        "livemesh-region" in p
        for p in problems
    ), problems
    done = subprocess.run(
        [sys.executable, "-m", "command.cli", "k8s", "check", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "every region sets it (deploy/k8s/README.md)" in done.stderr


def test_an_overlay_with_a_bad_setting_fails_through_the_typed_config(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        (K8S / "base" / "settings.toml").read_text() + "\n[playback]\nurl_ttl = 0\n"
    )
    path = overlay(
        tmp_path,
        "configMapGenerator:\n  - name: livemesh-region\n    literals:\n      - region=ap-south\n"
        "      - edge_public_url=https://edge.ap-south.example.net\n"
        "  - name: livemesh-settings\n    behavior: replace\n    files:\n      - settings.toml\n",
    )
    problems = check(path)[1]
    assert any(
        "Deployment playback (namespace livemesh-test): container playback: livemesh playback: "
        "bad setting url_ttl = 0 (from file" in p
        for p in problems
    ), problems


def test_an_overlay_that_does_not_render_says_why(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - no-such-dir\n")
    with pytest.raises(RenderError, match="kustomize failed"):
        render(tmp_path)


def test_a_kubernetes_version_without_schemas_is_named(one_region: list[Doc]) -> None:
    with pytest.raises(CheckError, match=r"no schemas of Kubernetes 9\.1\.0 here; newest: 1\."):
        schema_problems(one_region, "9.1.0")
