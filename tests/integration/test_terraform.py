"""infra/terraform without terraform: syntax, terraform fmt, and the
deployment contracts read from the parsed HCL.

    cd tests/integration && /usr/bin/python3 -m pytest -q -p no:cacheprovider test_terraform.py

tests/lib/hcl_check.mjs parses every .tf (and .tfvars.example) with
@cdktf/hcl2json and compares it with @cdktf/hcl-tools format, which follows
terraform fmt; `--json PATH` prints what hcl2json makes of the files. The
contract tests walk that JSON: blocks are lists of objects, and any
expression that is not a literal is a "${...}" string. The last test hands
each role's environment (with sample values for expressions and secrets) to
the built binary's --check-config and --print-config. Skipped when node or
the two npm packages are missing (tests/lib/deps.sh test installs them).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
MODULES = TF / "modules"
CHECKER = ROOT / "tests" / "lib" / "hcl_check.mjs"
NODE = shutil.which("node")
NPM_PACKAGES = [ROOT / "tests" / "node_modules" / "@cdktf" / p for p in ("hcl2json", "hcl-tools")]

_missing = [str(p) for p in NPM_PACKAGES if not (p / "package.json").is_file()]
pytestmark = pytest.mark.skipif(
    NODE is None or bool(_missing),
    reason="node is not on PATH" if NODE is None else
    "npm packages missing: %s (run tests/lib/deps.sh test)" % ", ".join(_missing),
)

EXPECTED_MODULES = {"ecs_service", "alb", "nlb", "lambda_ws", "redis", "rds", "efs", "waf", "alarms"}

# Environment names that carry secret material: they must only ever be ECS
# `secrets` (Secrets Manager), never plain `environment`.
SECRET_ENV = {
    "JWT_SECRET", "P2PMESH_JWT_SECRET", "SIGNALING_REDIS_URL", "P2PMESH_REDIS_URL", "REDIS_URL",
    "DATABASE_URL", "P2PMESH_DATABASE_URL", "KEY_PEM", "P2PMESH_TLS_KEY_PEM", "CERT_PEM", "CA_PEM",
    "P2PMESH_SIGNALING_TURN_SECRET", "P2PMESH_TUNNEL_PROXY_AUTH", "P2PMESH_TUNNEL_API_KEY",
}
# Expressions that would put a secret value into an environment block.
SECRET_VALUE = re.compile(r"random_password|secret_string|auth_token|\.password\b|\bpassword\b")


def run_checker(*args, timeout=120):
    return subprocess.run([NODE, str(CHECKER), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


@pytest.fixture(scope="module")
def hcl():
    """{path relative to infra/terraform: hcl2json of that file}."""
    r = run_checker("--json", TF)
    assert r.returncode == 0, r.stdout + r.stderr
    files = json.loads(r.stdout)
    assert "main.tf" in files and "modules/ecs_service/main.tf" in files, sorted(files)
    return files


def merged(files, directory):
    """Blocks of every .tf file of one module directory, merged by kind."""
    out = {"variable": {}, "output": {}, "locals": {}, "resource": {}, "data": {}, "module": {}}
    for rel, j in files.items():
        if os.path.dirname(rel) != directory or not rel.endswith(".tf"):
            continue
        for name, blocks in j.get("variable", {}).items():
            out["variable"][name] = blocks[0]
        for name, blocks in j.get("output", {}).items():
            out["output"][name] = blocks[0]
        for block in j.get("locals", []):
            out["locals"].update(block)
        for kind in ("resource", "data"):
            for rtype, named in j.get(kind, {}).items():
                for name, blocks in named.items():
                    out[kind]["%s.%s" % (rtype, name)] = blocks[0]
        for name, blocks in j.get("module", {}).items():
            out["module"][name] = blocks[0]
    return out


def walk(node, path=()):
    """Yield (path, key, value) for every object member in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def env_names(value):
    """Variable names an environment value defines: object keys, or the
    `NAME = ...` members of an expression that hcl2json kept as a string."""
    if isinstance(value, dict):
        names = set(value)
        for v in value.values():
            names |= env_names(v) if isinstance(v, (dict, list, str)) else set()
        return names
    if isinstance(value, list):
        return set().union(*[env_names(v) for v in value]) if value else set()
    if isinstance(value, str):
        return set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=", value))
    return set()


# ------------------------------------------------------------------ checker


def test_checker_passes_on_infra_terraform():
    r = run_checker(TF)
    assert r.returncode == 0, "hcl_check failed:\n" + r.stdout + r.stderr
    assert r.stdout == ""
    m = re.search(r"(\d+) file\(s\) checked, 0 problem", r.stderr)
    assert m and int(m.group(1)) >= 4 * len(EXPECTED_MODULES) + 4, r.stderr


def test_checker_fails_on_malformed_and_unformatted_files(tmp_path):
    good = 'variable "a" {\n  type    = string\n  default = "x"\n}\n'
    (tmp_path / "good.tf").write_text(good)
    (tmp_path / "broken.tf").write_text('resource "aws_s3_bucket" "b" {\n  bucket = "x"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ugly.tf").write_text('variable "b" {\ntype = string\n  default="y"\n}\n')
    (tmp_path / "ugly.tfvars.example").write_text('a="x"\nbb = "y"\n')
    r = run_checker(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, lines
    broken = [l for l in lines if "broken.tf" in l]
    assert broken and "parse error" in broken[0] and "Unclosed configuration block" in broken[0], lines
    ugly = [l for l in lines if os.path.join("sub", "ugly.tf") in l]
    assert ugly and "not formatted" in ugly[0], lines
    assert any("ugly.tfvars.example" in l and "not formatted" in l for l in lines), lines
    assert not any("good.tf" in l for l in lines), lines

    # Formatting the file as terraform fmt would makes it pass.
    (tmp_path / "broken.tf").unlink()
    (tmp_path / "ugly.tfvars.example").write_text('a  = "x"\nbb = "y"\n')
    (tmp_path / "sub" / "ugly.tf").write_text('variable "b" {\n  type    = string\n  default = "y"\n}\n')
    r = run_checker(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_checker_fails_on_directory_without_terraform(tmp_path):
    r = run_checker(tmp_path)
    assert r.returncode == 1
    assert "no .tf" in r.stdout
    r = run_checker(tmp_path / "nope")
    assert r.returncode == 1 and "not a directory" in r.stdout


# ------------------------------------------------------------- module layout


def test_every_module_is_complete(hcl):
    found = {p.name for p in MODULES.iterdir() if p.is_dir()}
    assert EXPECTED_MODULES <= found, found
    for name in sorted(found):
        d = MODULES / name
        for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (d / f).is_file(), "%s lacks %s" % (d, f)
        assert (d / "main.tf").read_text().startswith("# "), "%s/main.tf needs a header comment" % name
        versions = hcl["modules/%s/versions.tf" % name]["terraform"][0]
        assert versions["required_version"] == ">= 1.5"
        assert versions["required_providers"][0]["aws"]["version"] == "~> 5.0"
        m = merged(hcl, "modules/" + name)
        readme = (d / "README.md").read_text()
        for kind in ("variable", "output"):
            for item in m[kind]:
                assert "`%s`" % item in readme, "%s/README.md does not list %s %s" % (name, kind, item)
    for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", "terraform.tfvars.example"):
        assert (TF / f).is_file(), f
    assert "terraform.tfvars.example" in hcl


def test_every_variable_and_output_is_documented(hcl):
    dirs = [""] + ["modules/" + n for n in EXPECTED_MODULES]
    for d in dirs:
        m = merged(hcl, d)
        assert m["variable"], d
        for name, v in m["variable"].items():
            assert v.get("description"), "%s: variable %s has no description" % (d or ".", name)
            assert v.get("type"), "%s: variable %s has no type" % (d or ".", name)
        for name, o in m["output"].items():
            assert o.get("description"), "%s: output %s has no description" % (d or ".", name)


def test_references_resolve(hcl):
    """What terraform validate would catch first: every var., local., data.,
    resource and module output reference names something declared, and
    every module call passes only (and all required) variables."""
    dirs = {os.path.dirname(rel) for rel in hcl if rel.endswith(".tf")}
    info = {d: merged(hcl, d) for d in dirs}
    problems = []
    for d in sorted(dirs):
        m = info[d]
        where = d or "."
        text = "\n".join(strings({k: v for k, v in m.items()}))
        for ref in set(re.findall(r"(?<![\w.])var\.([A-Za-z_][\w-]*)", text)):
            if ref not in m["variable"]:
                problems.append("%s: var.%s" % (where, ref))
        for ref in set(re.findall(r"(?<![\w.])local\.([A-Za-z_][\w-]*)", text)):
            if ref not in m["locals"]:
                problems.append("%s: local.%s" % (where, ref))
        for rtype, name in set(re.findall(r"(?<![\w.])data\.([a-z0-9_]+)\.([A-Za-z_][\w-]*)", text)):
            if "%s.%s" % (rtype, name) not in m["data"]:
                problems.append("%s: data.%s.%s" % (where, rtype, name))
        for rtype, name in set(re.findall(r"(?<![\w.])((?:aws|random|terraform)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)", text)):
            if "%s.%s" % (rtype, name) not in m["resource"]:
                problems.append("%s: resource %s.%s" % (where, rtype, name))
        for mod, out in set(re.findall(r"(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?\.([A-Za-z_][\w-]*)", text)):
            if mod not in m["module"]:
                problems.append("%s: module.%s" % (where, mod))
                continue
            target = os.path.normpath(os.path.join(d, m["module"][mod]["source"]))
            if out not in info.get(target, {}).get("output", {}):
                problems.append("%s: module.%s has no output %s" % (where, mod, out))
        for mod, call in m["module"].items():
            target = os.path.normpath(os.path.join(d, call["source"]))
            assert target in info, "%s: module %s: no module at %s" % (where, mod, call["source"])
            declared = info[target]["variable"]
            for arg in call:
                if arg not in ("source", "count", "for_each", "depends_on", "providers") and arg not in declared:
                    problems.append("%s: module %s passes unknown %s" % (where, mod, arg))
            for var, body in declared.items():
                if "default" not in body and var not in call:
                    problems.append("%s: module %s misses required %s" % (where, mod, var))
    assert not problems, problems


def test_every_module_is_used_by_the_root(hcl):
    sources = {os.path.normpath(b["source"]) for b in merged(hcl, "")["module"].values()}
    assert {"modules/" + n for n in EXPECTED_MODULES} <= sources, sources


def test_no_account_ids_hostnames_or_machine_paths():
    for p in sorted(TF.rglob("*")):
        if not p.is_file() or ".terraform" in p.parts:
            continue
        text = p.read_text()
        rel = p.relative_to(TF)
        assert not re.search(r"(?<![\d.])\d{12}(?![\d.])", text), "%s: looks like an account id" % rel
        assert not re.search(r"(/(?:home|root|work|tmp)/|[A-Za-z]:\\\\)", text), "%s: machine path" % rel
        assert not re.search(r"\b[a-z0-9-]+\.(cache|rds|elb)\.amazonaws\.com\b", text), "%s: real endpoint" % rel


# ------------------------------------------------------- load balancers, WAF


def test_alb_target_groups_check_health_on_slash_health(hcl):
    root = merged(hcl, "")
    targets = root["locals"]["alb_targets_all"]
    for role, port in (("signaling", 8080), ("chat", 3000), ("game", 8080), ("chat-hls", 8088)):
        assert targets[role]["health_check_path"] == "/health", role
        assert targets[role]["port"] == port, role
    # docker/nginx-rtmp beside chat: HLS and /health on 8088, callbacks to the task's localhost.
    sidecar = merged(hcl, "")["locals"]["chat_rtmp_sidecars"]
    assert re.search(r"container_ports\s*=\s*\[1935, 8088\]", sidecar), sidecar
    assert re.search(r'CHAT_URL\s*=\s*"http://127\.0\.0\.1:3000"', sidecar), sidecar
    alb = merged(hcl, "modules/alb")
    tg = alb["resource"]["aws_lb_target_group.this"]
    assert tg["target_type"] == "ip" and tg["protocol"] == "HTTP"
    assert tg["health_check"][0]["path"] == "${each.value.health_check_path}"
    assert re.search(r'health_check_path\s*=\s*optional\(string,\s*"/health"\)', alb["variable"]["targets"]["type"])
    assert re.search(r"deregistration_delay\s*=\s*optional\(number,\s*30\)", alb["variable"]["targets"]["type"])
    # HTTP redirects to HTTPS when there is a certificate.
    redirect = alb["resource"]["aws_lb_listener.http_redirect"]
    assert redirect["default_action"][0]["redirect"][0]["protocol"] == "HTTPS"
    assert alb["resource"]["aws_lb_listener.https"]["port"] == 443


def test_nlb_carries_the_tunnel_and_rtmp(hcl):
    listeners = merged(hcl, "")["locals"]["nlb_listeners_all"]
    tunnel = listeners["tunnel"]
    assert tunnel["port"] == 8443
    assert (tunnel["health_check_protocol"], tunnel["health_check_port"], tunnel["health_check_path"]) == \
        ("HTTP", "8080", "/health")
    assert tunnel["deregistration_delay"] <= 30
    assert listeners["rtmp"]["port"] == 1935
    nlb = merged(hcl, "modules/nlb")
    assert nlb["resource"]["aws_lb.this"]["load_balancer_type"] == "network"
    assert nlb["resource"]["aws_lb_listener.this"]["protocol"] == "TCP"
    assert nlb["resource"]["aws_lb_target_group.this"]["target_type"] == "ip"


def test_waf_rule_is_rate_based_and_blocks(hcl):
    waf = merged(hcl, "modules/waf")
    acl = waf["resource"]["aws_wafv2_web_acl.this"]
    assert acl["scope"] == "REGIONAL"
    assert "allow" in acl["default_action"][0]
    rule = acl["rule"][0]
    rate = rule["statement"][0]["rate_based_statement"][0]
    assert rate["limit"] == "${var.rate_limit}" and rate["aggregate_key_type"] == "IP"
    assert waf["variable"]["rate_limit"]["default"] == 500
    assert waf["variable"]["rate_limit_action"]["default"] == "block"
    assert "aws_wafv2_web_acl_association.this" in waf["resource"]
    root = merged(hcl, "")
    assert root["variable"]["waf_rate_limit"]["default"] == 500


# ---------------------------------------------------------------- data stores


def test_redis_has_tls_auth_and_encryption(hcl):
    redis = merged(hcl, "modules/redis")
    rg = redis["resource"]["aws_elasticache_replication_group.this"]
    assert rg["transit_encryption_enabled"] is True
    assert rg["at_rest_encryption_enabled"] is True
    assert rg["auth_token"] == "${var.auth_token}"
    assert redis["variable"]["auth_token"].get("sensitive") is True
    url = redis["resource"]["aws_secretsmanager_secret_version.url"]["secret_string"]
    assert url.startswith("rediss://:"), url
    ingress = redis["resource"]["aws_vpc_security_group_ingress_rule.clients"]
    assert "referenced_security_group_id" in ingress and "cidr_ipv4" not in ingress


def test_rds_is_postgres15_with_forced_tls(hcl):
    rds = merged(hcl, "modules/rds")
    db = rds["resource"]["aws_db_instance.this"]
    assert db["engine"] == "postgres" and db["storage_encrypted"] is True and db["publicly_accessible"] is False
    v = rds["variable"]
    assert (v["engine_version"]["default"], v["instance_class"]["default"], v["storage_type"]["default"],
            v["allocated_storage"]["default"], v["backup_retention_period"]["default"]) == \
        ("15", "db.t4g.micro", "gp3", 20, 1)
    params = rds["resource"]["aws_db_parameter_group.this"]["parameter"]
    assert {"name": "rds.force_ssl", "value": "1"} in params
    url = rds["resource"]["aws_secretsmanager_secret_version.url"]["secret_string"]
    assert url.startswith("postgres://") and "sslmode=" in url


def test_efs_access_point_belongs_to_the_image_user(hcl):
    efs = merged(hcl, "modules/efs")
    assert efs["resource"]["aws_efs_file_system.this"]["encrypted"] is True
    v = efs["variable"]
    assert (v["posix_uid"]["default"], v["posix_gid"]["default"], v["root_directory"]["default"]) == \
        (10001, 10001, "/p2pmesh-chat")
    call = merged(hcl, "")["module"]["efs"]
    assert (call["posix_uid"], call["posix_gid"], call["root_directory"]) == (10001, 10001, "/p2pmesh-chat")
    ap = efs["resource"]["aws_efs_access_point.this"]
    assert ap["root_directory"][0]["creation_info"][0]["owner_uid"] == "${var.posix_uid}"


# ------------------------------------------------------------ ECS and secrets


def test_every_log_group_sets_retention(hcl):
    count = 0
    for rel, j in hcl.items():
        for name, blocks in j.get("resource", {}).get("aws_cloudwatch_log_group", {}).items():
            for b in blocks:
                count += 1
                assert "retention_in_days" in b, "%s: aws_cloudwatch_log_group.%s has no retention" % (rel, name)
    assert count >= 4, count


def test_task_definition_contract(hcl):
    ecs = merged(hcl, "modules/ecs_service")
    main = ecs["locals"]["main_container"]
    assert "P2PMESH_ROLE" in ecs["locals"]["environment"]
    text = json.dumps(main)
    for piece in ("stopTimeout", "healthCheck", "awslogs", "awslogs-group", "portMappings", "secrets", "valueFrom"):
        assert piece in text, piece
    hc = ecs["variable"]["health_check"]["type"]
    assert re.search(r'command\s*=\s*optional\(list\(string\),\s*\["CMD",\s*"p2pmesh",\s*"--probe"\]\)', hc), hc
    assert ecs["variable"]["stop_timeout"]["default"] == 30
    td = ecs["resource"]["aws_ecs_task_definition.this"]
    assert td["network_mode"] == "awsvpc" and td["requires_compatibilities"] == ["FARGATE"]
    svc = ecs["resource"]["aws_ecs_service.this"]
    assert svc["deployment_circuit_breaker"][0] == {"enable": "${var.deployment_circuit_breaker.enable}",
                                                    "rollback": "${var.deployment_circuit_breaker.rollback}"}
    # The execution role reads exactly the secrets of the task definition.
    doc = ecs["data"]["aws_iam_policy_document.execution"]
    stmts = [s["content"][0] for s in doc["dynamic"]["statement"]]
    secret_stmt = [s for s in stmts if s.get("sid") == "TaskSecrets"][0]
    assert secret_stmt["actions"] == ["secretsmanager:GetSecretValue"]
    assert secret_stmt["resources"] == "${local.secret_arns}"


def test_no_secret_value_in_any_environment(hcl):
    seen = 0
    for rel, j in hcl.items():
        for path, key, value in walk(j):
            if key == "environment" or key.endswith("_environment") or (key == "variables" and "environment" in path):
                if isinstance(value, str) and value.startswith("${var.") and value.endswith("}"):
                    continue  # a variable: checked where it is built
                seen += 1
                names = env_names(value)
                assert not names & SECRET_ENV, "%s %s: secret in environment: %s" % (rel, key, names & SECRET_ENV)
                blob = json.dumps(value)
                assert not SECRET_VALUE.search(blob), "%s %s: secret value in environment: %s" % (rel, key, blob)
    assert seen >= 6, seen
    # And the secrets go through ECS `secrets` (Secrets Manager ARNs).
    loc = merged(hcl, "")["locals"]
    assert "SIGNALING_REDIS_URL" in json.dumps(loc["signaling_secrets"])
    assert "JWT_SECRET" in json.dumps(loc["chat_secrets"])
    assert "P2PMESH_REDIS_URL" in json.dumps(loc["chat_secrets"])
    assert set(loc["tunnel_secrets"]) == {"CERT_PEM", "KEY_PEM", "CA_PEM"}
    game = json.dumps(loc["game_secrets"])
    assert "JWT_SECRET" in game and "DATABASE_URL" in game
    root = merged(hcl, "")["module"]
    for role in ("signaling", "chat", "tunnel", "game"):
        assert root[role]["secrets"] == "${local.%s_secrets}" % role
        assert root[role]["environment"] == "${local.%s_environment}" % role


def test_roles_use_the_seed_names(hcl):
    root = merged(hcl, "")
    loc = root["locals"]
    sig = loc["signaling_environment"]
    for name in ("SIGNALING_PORT", "SIGNALING_ADDR", "SIGNALING_REDIS_REQUIRE_TLS"):
        assert name in json.dumps(sig), name
    game = json.dumps(loc["game_environment"])
    for name in ("BIND_ADDR", "WS_PORT", "GRPC_PORT", "RAFT_PORT"):
        assert name in game, name
    assert "FLUIDITY_LOG_LEVEL" in json.dumps(loc["tunnel_environment"])
    chat = json.dumps(loc["chat_environment"])
    assert "S3_SYNC_ENABLED" in chat and "S3_DB_BUCKET" in chat
    assert loc["log_groups"]["chat"] == "/ecs/faltubaat/chat-app"
    assert loc["log_groups"]["nginx_rtmp"] == "/ecs/faltubaat/nginx-rtmp"
    v = root["variable"]
    assert v["tunnel_cluster_name"]["default"] == "fluidity"
    assert v["tunnel_service_name"]["default"] == "fluidity-server"
    assert v["tunnel_log_group_name"]["default"] == "/fluidity/server"
    assert v["tunnel_desired_count"]["default"] == 0
    assert root["module"]["tunnel"]["ignore_desired_count_changes"] is True
    for name in ("vpc_id", "public_subnet_ids", "private_subnet_ids", "image"):
        assert "default" not in v[name], name
    for name in ("certificate_arn", "alarm_email"):
        assert v[name]["default"] is None, name
    for role in ("signaling", "chat", "tunnel", "game", "lambda"):
        assert "%s_enabled" % role in v, role
    for role in ("signaling", "chat", "tunnel", "game"):
        assert "%s_desired_count" % role in v, role


def test_game_is_a_raft_cluster_on_spot(hcl):
    root = merged(hcl, "")
    game = root["module"]["game"]
    assert game["container_ports"] == [8080, 50051, 50052]
    rules = game["ingress_rules"]
    assert rules["peer"]["port"] == 50051 and rules["peer"]["self"] is True
    assert rules["raft"]["port"] == 50052 and rules["raft"]["self"] is True
    assert game["capacity_provider"] == '${var.game_use_spot ? "FARGATE_SPOT" : "FARGATE"}'
    assert game["health_check_grace_period_seconds"] == 120
    assert game["autoscaling"]["min_capacity"] == "${var.game_min_count}"
    v = root["variable"]
    counts = tuple(v[n]["default"] for n in ("game_desired_count", "game_min_count", "game_max_count"))
    assert counts == (3, 3, 9), counts
    assert v["game_use_spot"]["default"] is True
    # ECS rounds the minimum up and the maximum down: with 3 tasks the
    # deployment must be able to stop one and to start one.
    lo, hi = v["game_deployment_minimum_healthy_percent"]["default"], v["game_deployment_maximum_percent"]["default"]
    desired = v["game_desired_count"]["default"]
    assert -(-desired * lo // 100) < desired < desired * hi // 100, (lo, hi)
    alarms = root["module"]["alarms"]["ecs_min_running_tasks"]
    assert "min_tasks = 3" in alarms


# ------------------------------------------------------------------- lambda


def test_lambda_websocket_contract(hcl):
    lam = merged(hcl, "modules/lambda_ws")
    v = lam["variable"]
    assert v["runtime"]["default"] == "provided.al2023"
    assert v["handler"]["default"] == "bootstrap"
    assert v["architecture"]["default"] == "arm64"
    fn = lam["resource"]["aws_lambda_function.this"]
    assert fn["filename"] == "${var.zip_path}" and fn["architectures"] == ["${var.architecture}"]
    assert "CONNECTIONS_TABLE" in lam["locals"]["environment"]
    # With handler "bootstrap" p2pmesh would look for a handler of that name
    # ($_HANDLER) and fail Runtime.NoSuchHandler: lambda.handler overrides it.
    assert "P2PMESH_LAMBDA_HANDLER" in lam["locals"]["environment"]
    assert v["app_handler"]["default"] == "signaling"
    api = lam["resource"]["aws_apigatewayv2_api.this"]
    assert api["protocol_type"] == "WEBSOCKET"
    assert lam["locals"]["routes"] == '${toset(["$connect", "$disconnect", "$default"])}'
    assert lam["resource"]["aws_apigatewayv2_integration.lambda"]["integration_type"] == "AWS_PROXY"
    stage = lam["resource"]["aws_apigatewayv2_stage.this"]
    assert "throttling_rate_limit" in stage["default_route_settings"][0]
    assert stage["access_log_settings"][0]["destination_arn"] == "${aws_cloudwatch_log_group.access.arn}"
    table = lam["resource"]["aws_dynamodb_table.connections"]
    assert table["hash_key"] == "connectionId"
    gsi = table["global_secondary_index"][0]
    assert (gsi["name"], gsi["hash_key"], gsi["range_key"]) == ("realm-index", "realm", "peerId")
    attrs = {a["name"]: a["type"] for a in table["attribute"]}
    assert attrs == {"connectionId": "S", "realm": "S", "peerId": "S"}
    assert table["ttl"][0] == {"attribute_name": "ttl", "enabled": True}
    actions = set()
    for s in lam["data"]["aws_iam_policy_document.function"]["statement"]:
        actions.update(s["actions"])
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
            "dynamodb:Query", "execute-api:ManageConnections"} <= actions
    assert not any(a.endswith(":*") or a == "*" or "Scan" in a for a in actions), actions
    assert "wss://" in lam["output"]["websocket_url"]["description"]
    root = merged(hcl, "")
    for name, default in (("aws_region", "us-east-1"), ("stage", "prod"), ("lambda_timeout", 30),
                          ("lambda_memory_size", 512)):
        assert root["variable"][name]["default"] == default, name
    assert "project_name" in root["variable"]
    assert "websocket_url" in root["output"]


# ------------------------------------------------------------------- alarms


def test_alarms_cover_every_tier(hcl):
    alarms = merged(hcl, "modules/alarms")
    text = "\n".join(strings(alarms["locals"]))
    for metric in ("HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count", "UnHealthyHostCount",
                   "CPUUtilization", "MemoryUtilization", "RunningTaskCount", "Errors", "Throttles",
                   "ExecutionError", "IntegrationError", "DatabaseMemoryUsagePercentage",
                   "FreeStorageSpace"):
        assert re.search(r'metric\s*=\s*"%s"' % metric, text), metric
    assert "aws_sns_topic_subscription.email" in alarms["resource"]
    alarm = alarms["resource"]["aws_cloudwatch_metric_alarm.this"]
    assert alarm["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"]


def test_outputs_of_the_root(hcl):
    outs = merged(hcl, "")["output"]
    for name in ("alb_dns_name", "nlb_dns_name", "websocket_url", "log_group_names", "secret_arns"):
        assert name in outs, name


# ------------------------------------------- environments the binary accepts

# Sample values for environment entries that are expressions, not literals.
SAMPLE_ENV = {
    "P2PMESH_ENV": "production",
    "NODE_ENV": "production",
    "P2PMESH_LIMITS_TRUSTED_PROXIES": "10.0.0.0/16,10.1.0.0/16",
    "P2PMESH_SIGNALING_AUTH": "none",
    "SIGNALING_PUBLIC_URL": "https://signal.example.org",
    "AWS_REGION": "us-east-1",
    "S3_DB_BUCKET": "backups",
    "S3_DB_KEY": "faltubaat/database/faltubaat.db",
    "P2PMESH_CHAT_RTMP_URL": "rtmp://nlb.example.org:1935/live",
    "FLUIDITY_LOG_LEVEL": "info",
    "ECS_SERVICE_NAME": "fluidity-server",
    "ECS_CLUSTER_NAME": "fluidity",
    "CONNECTIONS_TABLE": "p2pmesh-signaling-prod-connections",
    "P2PMESH_LAMBDA_HANDLER": "signaling",
    "P2PMESH_LOG_LEVEL": "info",
    "P2PMESH_METRICS_EMF": "true",
}


def environment_of(expr):
    """NAME -> value of an environment local: literal strings as written,
    expressions from SAMPLE_ENV (None when there is no sample)."""
    if isinstance(expr, dict):
        return {k: (v if isinstance(v, str) and "${" not in v else SAMPLE_ENV.get(k)) for k, v in expr.items()}
    out = {}
    for name, value in re.findall(r'\b([A-Z][A-Z0-9_]*)\s*=\s*("[^"\n]*"|[^\n,}]+)', expr):
        lit = value.startswith('"') and "${" not in value
        out[name] = value[1:-1] if lit else SAMPLE_ENV.get(name)
    return out


def test_role_environments_are_understood_by_the_binary(hcl, tmp_path):
    """Every environment the root builds (plus its secrets, with sample
    values) is a valid configuration of its role, and every P2PMESH_* name
    in it names a real config key."""
    import helpers

    if not os.access(helpers.BIN, os.X_OK):
        pytest.skip("p2pmesh binary not built")
    certs = tmp_path / "certs"
    r = subprocess.run([helpers.BIN, "--role=tunnel", "--tunnel.gen_certs=%s" % certs],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    secrets = {
        "JWT_SECRET": "k" * 64,
        "SIGNALING_REDIS_URL": "rediss://:token@redis.example.org:6379",
        "P2PMESH_REDIS_URL": "rediss://:token@redis.example.org:6379",
        "DATABASE_URL": "postgres://p2pmesh:pw@db.example.org:5432/p2pmesh?sslmode=require",
        "CERT_PEM": (certs / "server.crt").read_text(),
        "KEY_PEM": (certs / "server.key").read_text(),
        "CA_PEM": (certs / "ca.crt").read_text(),
    }
    loc = merged(hcl, "")["locals"]
    lam = merged(hcl, "modules/lambda_ws")["locals"]
    cases = {
        "signaling": (loc["signaling_environment"], loc["signaling_secrets"]),
        "chat": (loc["chat_environment"], loc["chat_secrets"]),
        "tunnel": (loc["tunnel_environment"], loc["tunnel_secrets"]),
        "game": (loc["game_environment"], loc["game_secrets"]),
        "lambda": (lam["environment"], {}),
    }
    for role, (env_expr, secret_expr) in cases.items():
        env = environment_of(env_expr)
        assert env, role
        if "DB_PATH" in env:
            env["DB_PATH"] = str(tmp_path / "data" / "p2pmesh.db")
        missing = sorted(k for k, v in env.items() if v is None)
        assert not missing, "%s: add sample values for %s to SAMPLE_ENV" % (role, missing)
        names = set(secret_expr) if isinstance(secret_expr, dict) else env_names(secret_expr)
        for name in names:
            assert name in secrets, "%s: no sample for secret %s" % (role, name)
            env[name] = secrets[name]
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "P2PMESH_ROLE": role, **env}
        r = subprocess.run([helpers.BIN, "--check-config"], env=run_env, capture_output=True, text=True,
                           timeout=30, cwd=str(tmp_path))
        assert r.returncode == 0, "%s: %s%s" % (role, r.stdout, r.stderr)
        r = subprocess.run([helpers.BIN, "--print-config"], env=run_env, capture_output=True, text=True,
                           timeout=30, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        from_env = {"P2PMESH_" + line.split(" = ")[0].replace(".", "_").upper()
                    for line in r.stdout.splitlines() if line.endswith("# env")}
        unknown = sorted(n for n in env if n.startswith("P2PMESH_") and n != "P2PMESH_ROLE" and n not in from_env)
        assert not unknown, "%s: not config keys: %s" % (role, unknown)
