"""livemesh's own rules for a rendered ``deploy/k8s`` overlay (``livemesh k8s check``).

Every container runs a real ``livemesh`` server kind, with probes, resources and a
non-root security context. Each one's settings load through :mod:`kernel.config` from
its flags, its environment (ConfigMaps resolved, Secrets taken as set by the operator)
and the settings file it mounts, as the process itself would load them, and what a
cluster needs is set: Redis, URL-token keys, mTLS on every gRPC hop, the region's values,
a shared VOD store with its credentials from a Secret.
gRPC services are probed by the gRPC health protocol; edges and shields spread over nodes
and zones; every channel runs as all its redundant pipelines, never two on one host and
spread over zones; every Deployment has a PodDisruptionBudget and leaves its replica count to its
HPA when it has one; a settings file names only sections and keys that exist; no Secret
carries a value.
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from command.cli import COMMANDS
from command.health import settings_for
from kernel.config import KINDS, ConfigError, ServiceSettings, Settings, TlsSettings
from kernel.config.load import SHARED_SECTION
from kernel.rpc.tls import CA_ENV, CERT_ENV, KEY_ENV, tls_paths
from live.pipelines import PIPELINES

NOT_SERVERS = ("demo", "loadtest")
# kinds that keep state in Redis: in a cluster an embedded one would die with its pod
NEEDS_REDIS = (
    "origin", "channel", "identity", "profile", "recommend", "playback", "channels", "qoe"
)  # fmt: skip
# kinds that sign or verify URL tokens: without keys they would use the development key
NEEDS_TOKEN_KEYS = ("edge", "playback")
# what boto3 reads the VOD bucket's credentials from (kernel/objectstore.py)
VOD_STORE_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SPREAD_TIERS = ("edge", "shield")
HEALTH = ["livemesh", "health"]
ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"
README = "deploy/k8s/README.md"

Doc = dict[str, Any]


def name_of(doc: Doc) -> str:
    meta = doc.get("metadata", {})
    where = f" (namespace {meta['namespace']})" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {meta.get('name')}{where}"


class Cluster:
    """The rendered objects, indexed for the lookups the rules make."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs
        self.config_maps = {
            (_ns(d), d["metadata"]["name"]): d.get("data", {}) for d in self.of("ConfigMap")
        }

    def of(self, kind: str) -> Iterator[Doc]:
        return (doc for doc in self.docs if doc.get("kind") == kind)


def _ns(doc: Doc) -> str:
    return str(doc.get("metadata", {}).get("namespace", ""))


def _pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def rule_problems(docs: list[Doc]) -> list[str]:
    """Everything in ``docs`` that breaks one of livemesh's rules, one line each."""
    cluster = Cluster(docs)
    problems = [f"{name_of(d)}: carries values; Secrets are the operator's" for d in _valued(docs)]
    problems += _hpa_problems(cluster)
    problems += _settings_file_problems(cluster)
    problems += _pipeline_problems(cluster)
    for deployment in cluster.of("Deployment"):
        where = name_of(deployment)
        problems += [f"{where}: {p}" for p in _deployment_problems(cluster, deployment)]
    return problems


def _hpa_problems(cluster: Cluster) -> list[str]:
    """Each HPA scales a Deployment that leaves its replica count to the HPA (an apply
    of a Deployment with ``replicas`` would reset what the HPA chose)."""
    deployments = {(_ns(d), d["metadata"]["name"]): d for d in cluster.of("Deployment")}
    problems = []
    for hpa in cluster.of("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        deployment = deployments.get((_ns(hpa), target["name"]))
        if target["kind"] != "Deployment" or deployment is None:
            problems.append(f"{name_of(hpa)}: scales {target['kind']} {target['name']}: none")
        elif "replicas" in deployment["spec"]:
            problems.append(
                f"{name_of(deployment)}: sets replicas, which every apply would reset under "
                f"{name_of(hpa)}; size it with the HPA's minReplicas"
            )
    return problems


def _settings_file_problems(cluster: Cluster) -> list[str]:
    """A settings file's sections and ``[all]`` keys are ones some process kind knows:
    the loader skips what no kind reads, so a misspelt one would be silently lost."""
    problems = []
    known = {key for cls in KINDS.values() for key in cls.model_fields}
    for (namespace, name), data in cluster.config_maps.items():
        for file, text in data.items():
            if not file.endswith(".toml") or not name.startswith("livemesh-settings"):
                continue
            try:
                tables = tomllib.loads(str(text))
            except tomllib.TOMLDecodeError as exc:
                problems.append(f"ConfigMap {name} ({namespace}): {file}: {exc}")
                continue
            unknown = sorted(set(tables) - {SHARED_SECTION, *KINDS})
            unknown += [f"[all] {k}" for k in tables.get(SHARED_SECTION, {}) if k not in known]
            problems += [f"ConfigMap {name} ({namespace}): {file}: no such {u}" for u in unknown]
    return problems


def _pipeline_problems(cluster: Cluster) -> list[str]:
    """Each channel runs as every one of its redundant pipelines (``livemesh channel NAME
    --pipeline P``, :mod:`live.pipelines`), and no two of them can share a host: a
    *required* pod anti-affinity on the hostname selecting the others (a preferred one
    lets the scheduler put both on one node, whose loss takes the channel off air), and
    a zone spread over them all."""
    channels: dict[tuple[str, str], dict[str, Doc]] = {}
    for deployment in cluster.of("Deployment"):
        for container in _pod(deployment)["containers"]:
            args = [str(a) for a in container.get("args", [])]
            if args[:1] == ["channel"] and len(args) > 1:
                flag = args.index("--pipeline") if "--pipeline" in args[:-1] else -2
                pipelines = channels.setdefault((_ns(deployment), args[1]), {})
                pipelines[args[flag + 1] if flag >= 0 else "(none)"] = deployment
    problems = []
    for (namespace, channel), pipelines in channels.items():
        if sorted(pipelines) != sorted(PIPELINES):
            problems.append(
                f"channel {channel} (namespace {namespace}): runs pipelines "
                f"{', '.join(sorted(pipelines))}; a channel runs as {', '.join(PIPELINES)} "
                "(--pipeline), each its own Deployment"
            )
        for deployment in pipelines.values():
            peers = [_template_labels(d) for d in pipelines.values() if d is not deployment]
            problems += [f"{name_of(deployment)}: {p}" for p in _apart(deployment, peers)]
    return problems


def _apart(deployment: Doc, peers: list[dict[str, str]]) -> Iterator[str]:
    """What lets a pipeline's pod share a host with its peers', or all sit in one zone."""
    pod = _pod(deployment)
    required = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = required.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if not any(
        t.get("topologyKey") == HOSTNAME and all(_selects(t.get("labelSelector"), p) for p in peers)
        for t in terms
    ):
        yield (
            f"a pipeline needs a required pod anti-affinity on {HOSTNAME} selecting its "
            "channel's other pipelines: two on one host are lost together"
        )
    everyone = [_template_labels(deployment), *peers]
    if not any(
        c.get("topologyKey") == ZONE and all(_selects(c.get("labelSelector"), p) for p in everyone)
        for c in pod.get("topologySpreadConstraints", [])
    ):
        yield f"a pipeline needs a topology spread constraint over {ZONE} selecting every pipeline"


def _template_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels", {})
    return labels


def _selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector of only ``matchLabels`` selects pods labelled ``labels``."""
    wanted = (selector or {}).get("matchLabels", {})
    return (
        bool(wanted)
        and not (selector or {}).get("matchExpressions")
        and wanted.items() <= labels.items()
    )


def _valued(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") == "Secret" and (d.get("data") or d.get("stringData")))


def _deployment_problems(cluster: Cluster, deployment: Doc) -> Iterator[str]:
    pod = _pod(deployment)
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        yield "pod securityContext.runAsNonRoot is not true"
    yield from _spread_problems(deployment)
    if not _has_pdb(cluster, deployment):
        yield "no PodDisruptionBudget selects its pods"
    for container in pod["containers"]:
        for problem in _container_problems(cluster, deployment, container):
            yield f"container {container['name']}: {problem}"


def _has_pdb(cluster: Cluster, deployment: Doc) -> bool:
    labels = _template_labels(deployment)
    for pdb in cluster.of("PodDisruptionBudget"):
        wanted = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if _ns(pdb) == _ns(deployment) and wanted and wanted.items() <= labels.items():
            return True
    return False


def _spread_problems(deployment: Doc) -> Iterator[str]:
    component = deployment["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component")
    if component not in SPREAD_TIERS:
        return
    pod = _pod(deployment)
    if not pod.get("affinity", {}).get("podAntiAffinity"):
        yield f"{component} pods need pod anti-affinity (one per node)"
    if not any(c.get("topologyKey") == ZONE for c in pod.get("topologySpreadConstraints", [])):
        yield f"{component} pods need a topology spread constraint over {ZONE}"


def _container_problems(cluster: Cluster, deployment: Doc, container: Doc) -> Iterator[str]:
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in container:
            yield f"no {probe}"
    for part in ("requests", "limits"):
        given = container.get("resources", {}).get(part, {})
        if not {"cpu", "memory"} <= given.keys():
            yield f"resources.{part} needs cpu and memory"
    if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
        yield "securityContext.allowPrivilegeEscalation must be false"
    if container.get("command") not in (None, ["livemesh"]):
        yield f"command {container['command']} overrides the image's entry point, livemesh"
    args = [str(a) for a in container.get("args", [])]
    kind = args[0] if args else ""
    if kind not in COMMANDS or kind not in KINDS or kind in NOT_SERVERS:
        servers = sorted(k for k in KINDS if k in COMMANDS and k not in NOT_SERVERS)
        yield f"args {args[:1]}: not a livemesh server kind; one of {', '.join(servers)}"
        return
    env, missing = _environment(cluster, _ns(deployment), container)
    yield from missing
    if missing:
        return
    try:
        settings = _settings(cluster, deployment, container, args, env)
    except ConfigError as exc:
        yield f"livemesh {kind}: {exc}"
        return
    yield from _cluster_needs(settings, env)
    yield from _probe_kind(settings, container, env)


def _environment(
    cluster: Cluster, namespace: str, container: Doc
) -> tuple[dict[str, str], list[str]]:
    """The container's environment as the kubelet would build it, and each reference
    to a ConfigMap key the overlay does not define. A Secret reference stands for a
    value the operator supplies (``<secret NAME/KEY>``); an optional one may be unset."""
    env: dict[str, str] = {}
    missing = []
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = cluster.config_maps.get((namespace, ref["name"]))
            if data is not None and str(data.get(ref["key"], "")).strip():
                env[var["name"]] = str(data[ref["key"]])
            elif not ref.get("optional"):
                missing.append(
                    f"env {var['name']} needs key {ref['key']!r} of ConfigMap {ref['name']}, "
                    f"which this overlay does not set: every region sets it ({README})"
                )
        elif "secretKeyRef" in source and not source["secretKeyRef"].get("optional"):
            ref = source["secretKeyRef"]
            env[var["name"]] = f"<secret {ref['name']}/{ref['key']}>"
        elif "fieldRef" in source:
            env[var["name"]] = f"<{source['fieldRef']['fieldPath']}>"
    return env, missing


def _expand(text: str, env: Mapping[str, str]) -> str:
    """``$(NAME)`` replaced as the kubelet does in args and values (unknown names stay)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def _settings(
    cluster: Cluster, deployment: Doc, container: Doc, args: list[str], env: dict[str, str]
) -> Settings:
    """The container's settings through :mod:`kernel.config`, its settings file written
    out from the ConfigMap it mounts at ``LIVEMESH_SETTINGS``."""
    with tempfile.TemporaryDirectory() as tmp:
        environ = dict(env)
        if "LIVEMESH_SETTINGS" in env:
            text = _mounted(cluster, deployment, container, env["LIVEMESH_SETTINGS"])
            path = Path(tmp) / "settings.toml"
            path.write_text(text)
            environ["LIVEMESH_SETTINGS"] = str(path)
        else:
            environ["LIVEMESH_SETTINGS"] = ""
        return settings_for([_expand(a, env) for a in args], environ).settings


def _mounted(cluster: Cluster, deployment: Doc, container: Doc, path: str) -> str:
    """The text of the ConfigMap file the container sees at ``path``."""
    volumes = {v["name"]: v for v in _pod(deployment).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        config_map = volumes.get(mount["name"], {}).get("configMap")
        if config_map and path.startswith(folder):
            data = cluster.config_maps.get((_ns(deployment), config_map["name"]), {})
            key = path.removeprefix(folder)
            if key in data:
                return str(data[key])
    raise ConfigError(f"settings file {path}: no mounted ConfigMap holds it")


def _cluster_needs(settings: Settings, env: Mapping[str, str]) -> Iterator[str]:
    """What a process needs in a cluster that its defaults, made for one machine, lack."""
    kind = settings.kind
    if kind in NEEDS_REDIS and not getattr(settings, "redis_url", None):
        yield f"livemesh {kind} needs REDIS_URL (Secret livemesh-secrets, {README})"
    if kind in NEEDS_TOKEN_KEYS and not env.get("LIVEMESH_TOKEN_KEYS"):
        yield f"livemesh {kind} needs LIVEMESH_TOKEN_KEYS: without it, the development key"
    if kind == "edge":
        if getattr(settings, "region", "local") == "local":
            yield "an edge needs --region: the region it registers in"
        if getattr(settings, "tier", "") == "edge" and not getattr(settings, "public_url", None):
            yield "an edge needs --public-url: the URL players are handed"
        if getattr(settings, "qoe", "off") == "on" and not getattr(settings, "redis_url", None):
            yield f"an edge with --qoe on needs REDIS_URL: the QoE stream's Redis ({README})"
    store = getattr(settings, "vod_store", None)
    if store is not None:
        yield from _vod_store_needs(kind, str(store), env)
    try:
        if isinstance(settings, TlsSettings) and tls_paths(settings) is None:
            yield f"livemesh {kind} speaks gRPC: mTLS needs {CA_ENV}, {CERT_ENV}, {KEY_ENV}"
    except ValueError as exc:
        yield str(exc)
    host = getattr(settings, "host", "0.0.0.0")
    if _loopback(host):
        yield f"listens on {host}: nothing outside the pod reaches it"
    metrics_host = getattr(settings, "metrics_host", "0.0.0.0")
    if _loopback(metrics_host):
        yield f"serves /metrics and its probes on {metrics_host}: the kubelet cannot reach them"


def _vod_store_needs(kind: str, store: str, env: Mapping[str, str]) -> Iterator[str]:
    """A process with a VOD store (catalog, gateway, origin) shares it with its replicas
    and the other two kinds: in a cluster that is an S3 bucket (a pod's directory dies with
    the pod and no other pod sees it), and the bucket's credentials come from a Secret."""
    if not store.startswith("s3://"):
        yield (
            f"livemesh {kind} needs LIVEMESH_VOD_STORE = s3://bucket/prefix (ConfigMap "
            f"livemesh-region key vod_store, {README}): {store!r} is the pod's own directory"
        )
        return
    for name in VOD_STORE_CREDENTIALS:
        if not env.get(name, "").startswith("<secret "):
            yield f"livemesh {kind} needs {name} from a Secret (secretKeyRef), never a value"


def _loopback(host: str) -> bool:
    return host.startswith("127.") or host == "localhost"


def _probe_kind(settings: Settings, container: Doc, env: Mapping[str, str]) -> Iterator[str]:
    """A gRPC service on mTLS is probed by ``livemesh health`` inside its container (the
    kubelet's gRPC probe presents no client certificate, and the server then takes
    nothing else); one on plaintext by the native gRPC probe on its port; the others by
    HTTP or exec."""
    is_grpc = isinstance(settings, ServiceSettings) and settings.kind != "gateway"
    port = getattr(settings, "port", None)
    on_tls = bool(env.get(CERT_ENV))
    for name in ("readinessProbe", "livenessProbe"):
        probe = container.get(name, {})
        if is_grpc and on_tls and probe.get("exec", {}).get("command", [])[:2] != HEALTH:
            yield f"{name}: a gRPC service on mTLS is probed by exec {HEALTH}"
        elif is_grpc and not on_tls and probe.get("grpc", {}).get("port") != port:
            yield f"{name}: a gRPC service is probed by grpc on its port {port}"
        elif not is_grpc and "grpc" in probe:
            yield f"{name}: livemesh {settings.kind} serves HTTP, not gRPC"
