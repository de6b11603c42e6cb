# p2pmesh on AWS, every role from one image, in an existing VPC: signaling,
# chat and game as ECS Fargate services behind one ALB (WAF rate limit), the
# tunnel and chat's RTMP behind one NLB, the lambda role behind API Gateway
# WebSocket. Owns the ECS clusters, the generated secrets (JWT key, Redis AUTH
# token, database password) and the wiring of the modules: Redis for
# signaling/chat, RDS for the game's raft discovery, EFS for chat's SQLite,
# and the alarms.

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = local.tags
  }
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_partition" "current" {}

locals {
  tags = merge({ Project = var.project_name, Stage = var.stage, ManagedBy = "terraform" }, var.tags)

  enabled = {
    signaling = var.signaling_enabled
    chat      = var.chat_enabled
    tunnel    = var.tunnel_enabled
    game      = var.game_enabled
  }

  alb_enabled   = var.signaling_enabled || var.chat_enabled || var.game_enabled
  rtmp_enabled  = var.chat_enabled && var.chat_rtmp_image != null
  nlb_enabled   = var.tunnel_enabled || local.rtmp_enabled
  redis_enabled = var.redis_enabled && (var.signaling_enabled || var.chat_enabled)
  rds_enabled   = var.game_enabled && var.game_database_enabled
  chat_sqlite   = var.chat_database_url_secret_arn == null
  efs_enabled   = var.chat_enabled && local.chat_sqlite
  jwt_needed    = var.chat_enabled || var.game_enabled || (var.signaling_enabled && var.signaling_auth == "jwt")

  generate_jwt        = local.jwt_needed && var.jwt_secret_arn == null
  generate_redis_auth = local.redis_enabled && var.redis_auth_token_secret_arn == null

  # The ALB's addresses: the roles believe X-Forwarded-For from them only
  # (limits.trusted_proxies), so per-IP limits see clients, not the ALB.
  vpc_cidrs = join(",", [for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block])

  # The EFS access point is mounted over the image's working directory, as
  # docker/compose.yaml mounts its volume; chat's SQLite file lives in it.
  chat_data_dir = "/var/lib/p2pmesh"

  log_groups = {
    signaling  = "/ecs/${var.project_name}/signaling"
    chat       = "/ecs/faltubaat/chat-app"
    nginx_rtmp = "/ecs/faltubaat/nginx-rtmp"
    tunnel     = var.tunnel_log_group_name
    game       = "/ecs/${var.project_name}/game"
  }

  cluster_of = {
    signaling = var.signaling_cluster_name
    chat      = var.chat_cluster_name
    tunnel    = var.tunnel_cluster_name
    game      = var.game_cluster_name
  }
  cluster_names = toset([for role, on in local.enabled : local.cluster_of[role] if on])
}

################################################################################
# Checks that span variables

resource "terraform_data" "preconditions" {
  lifecycle {
    precondition {
      condition = !var.tunnel_enabled || (
        var.tunnel_cert_pem_secret_arn != null && var.tunnel_key_pem_secret_arn != null && var.tunnel_ca_pem_secret_arn != null
      )
      error_message = "tunnel_enabled needs tunnel_cert_pem_secret_arn, tunnel_key_pem_secret_arn and tunnel_ca_pem_secret_arn: the tunnel server refuses to start without its certificate and client CA."
    }

    precondition {
      condition     = !var.lambda_enabled || fileexists(var.lambda_zip_path)
      error_message = "lambda_enabled needs the function zip at lambda_zip_path: run `make lambda-zip` (infra/lambda/package.sh) on a machine of lambda_architecture first."
    }

    precondition {
      condition     = !var.chat_enabled || !local.chat_sqlite || var.chat_desired_count <= 1
      error_message = "chat on SQLite (EFS) allows one task: set chat_desired_count = 1, or chat_database_url_secret_arn for PostgreSQL."
    }

    precondition {
      condition     = !var.signaling_enabled || local.redis_enabled || var.signaling_desired_count <= 1
      error_message = "More than one signaling task needs Redis (redis_enabled = true): peers on different tasks only meet through it."
    }
  }
}

check "alb_routing" {
  assert {
    condition = alltrue([
      for role, hosts in { signaling = var.signaling_hostnames, chat = var.chat_hostnames, game = var.game_hostnames } :
      !local.enabled[role] || role == var.alb_default_role || length(hosts) > 0
    ])
    error_message = "An enabled ALB role other than alb_default_role has no host names (signaling_hostnames, chat_hostnames, game_hostnames): the ALB cannot route to it."
  }
}

check "game_quorum" {
  assert {
    condition     = !var.game_enabled || var.game_database_enabled || var.game_desired_count <= 1
    error_message = "Game tasks without game_database_enabled (or P2PMESH_GAME_PEERS) do not form a raft cluster: each is a separate single node."
  }
}

################################################################################
# Secrets generated here (or taken from existing secrets)

resource "random_password" "jwt" {
  count = local.generate_jwt ? 1 : 0

  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "jwt" {
  count = local.generate_jwt ? 1 : 0

  name                    = "${var.project_name}/jwt-secret"
  description             = "HS256 key of p2pmesh tokens (JWT_SECRET of chat, game and signaling)"
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret_version" "jwt" {
  count = local.generate_jwt ? 1 : 0

  secret_id     = aws_secretsmanager_secret.jwt[0].id
  secret_string = random_password.jwt[0].result
}

resource "random_password" "redis_auth" {
  count = local.generate_redis_auth ? 1 : 0

  length  = 48
  special = false
}

# The token alone, for operators (redis-cli --tls -a); the services read the
# whole URL from the redis module's secret.
resource "aws_secretsmanager_secret" "redis_auth" {
  count = local.generate_redis_auth ? 1 : 0

  name                    = "${var.project_name}/redis-auth-token"
  description             = "AUTH token of the p2pmesh ElastiCache replication group"
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret_version" "redis_auth" {
  count = local.generate_redis_auth ? 1 : 0

  secret_id     = aws_secretsmanager_secret.redis_auth[0].id
  secret_string = random_password.redis_auth[0].result
}

data "aws_secretsmanager_secret_version" "redis_auth" {
  count = local.redis_enabled && var.redis_auth_token_secret_arn != null ? 1 : 0

  secret_id = var.redis_auth_token_secret_arn
}

resource "random_password" "db" {
  count = local.rds_enabled ? 1 : 0

  length  = 40
  special = false
}

locals {
  jwt_secret_arn          = var.jwt_secret_arn != null ? var.jwt_secret_arn : one(aws_secretsmanager_secret_version.jwt[*].arn)
  redis_auth_secret_arn   = var.redis_auth_token_secret_arn != null ? var.redis_auth_token_secret_arn : one(aws_secretsmanager_secret_version.redis_auth[*].arn)
  redis_auth_token        = var.redis_auth_token_secret_arn != null ? one(data.aws_secretsmanager_secret_version.redis_auth[*].secret_string) : one(random_password.redis_auth[*].result)
  redis_url_secret_arn    = one(module.redis[*].url_secret_arn)
  database_url_secret_arn = one(module.rds[*].url_secret_arn)
}

################################################################################
# ECS clusters (one per distinct name; the seeds name one per application)

resource "aws_ecs_cluster" "this" {
  for_each = local.cluster_names

  name = each.value

  # RunningTaskCount for the game's quorum alarm comes from Container Insights.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  for_each = aws_ecs_cluster.this

  cluster_name       = each.value.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

################################################################################
# Load balancers and WAF

locals {
  alb_targets_all = {
    # Listener rules are tried by priority: chat's HLS path before chat's host.
    "chat-hls" = {
      port              = 8088
      health_check_path = "/health"
      host_headers      = var.chat_hostnames
      path_patterns     = ["/hls/*"]
      priority          = 10
    }
    chat = {
      port              = 3000
      health_check_path = "/health"
      host_headers      = var.chat_hostnames
      priority          = 20
    }
    signaling = {
      port              = 8080
      health_check_path = "/health"
      host_headers      = var.signaling_hostnames
      priority          = 30
    }
    game = {
      port              = 8080
      health_check_path = "/health"
      host_headers      = var.game_hostnames
      priority          = 40
    }
  }
  alb_target_enabled = merge(local.enabled, { "chat-hls" = local.rtmp_enabled })
  alb_targets        = { for k, t in local.alb_targets_all : k => t if local.alb_target_enabled[k] }

  nlb_listeners_all = {
    # mTLS passes through (TCP); the health check is plain HTTP on the admin port.
    tunnel = {
      port                  = 8443
      allowed_cidrs         = var.tunnel_allowed_cidrs
      health_check_protocol = "HTTP"
      health_check_port     = "8080"
      health_check_path     = "/health"
      health_check_matcher  = "200-399"
      deregistration_delay  = 30
    }
    rtmp = {
      port                  = 1935
      allowed_cidrs         = var.chat_rtmp_allowed_cidrs
      health_check_protocol = "TCP"
      deregistration_delay  = 30
    }
  }
  nlb_listener_enabled = { tunnel = var.tunnel_enabled, rtmp = local.rtmp_enabled }
  nlb_listeners        = { for k, l in local.nlb_listeners_all : k => l if local.nlb_listener_enabled[k] }
}

module "alb" {
  source = "./modules/alb"
  count  = local.alb_enabled ? 1 : 0

  name                        = "${var.project_name}-web"
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.public_subnet_ids
  certificate_arn             = var.certificate_arn
  additional_certificate_arns = var.additional_certificate_arns
  ingress_cidrs               = var.alb_ingress_cidrs
  idle_timeout                = var.alb_idle_timeout
  targets                     = local.alb_targets
  default_target              = contains(keys(local.alb_targets), var.alb_default_role) ? var.alb_default_role : null
  deny_path_patterns          = var.alb_deny_path_patterns
}

module "waf" {
  source = "./modules/waf"
  count  = local.alb_enabled && var.waf_enabled ? 1 : 0

  name          = "${var.project_name}-alb"
  resource_arns = { alb = module.alb[0].arn }
  rate_limit    = var.waf_rate_limit
}

module "nlb" {
  source = "./modules/nlb"
  count  = local.nlb_enabled ? 1 : 0

  name       = "${var.project_name}-tcp"
  vpc_id     = var.vpc_id
  subnet_ids = var.public_subnet_ids
  listeners  = local.nlb_listeners
}

################################################################################
# Data stores

locals {
  service_security_groups = {
    signaling = one(module.signaling[*].security_group_id)
    chat      = one(module.chat[*].security_group_id)
    tunnel    = one(module.tunnel[*].security_group_id)
    game      = one(module.game[*].security_group_id)
  }
}

module "redis" {
  source = "./modules/redis"
  count  = local.redis_enabled ? 1 : 0

  name               = var.project_name
  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  node_type          = var.redis_node_type
  num_cache_clusters = var.redis_num_cache_clusters
  auth_token         = local.redis_auth_token
  allowed_security_group_ids = {
    for role in ["signaling", "chat"] : role => local.service_security_groups[role] if local.enabled[role]
  }
  url_secret_name                = "${var.project_name}/redis-url"
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
}

module "rds" {
  source = "./modules/rds"
  count  = local.rds_enabled ? 1 : 0

  identifier              = "${var.project_name}-game"
  vpc_id                  = var.vpc_id
  subnet_ids              = var.private_subnet_ids
  instance_class          = var.db_instance_class
  allocated_storage       = var.db_allocated_storage
  backup_retention_period = var.db_backup_retention_days
  multi_az                = var.db_multi_az
  deletion_protection     = var.db_deletion_protection
  db_name                 = "p2pmesh"
  username                = "p2pmesh"
  password                = random_password.db[0].result
  allowed_security_group_ids = merge(
    { game = local.service_security_groups.game },
    var.chat_enabled && !local.chat_sqlite ? { chat = local.service_security_groups.chat } : {},
  )
  url_secret_name                = "${var.project_name}/database-url"
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
}

module "efs" {
  source = "./modules/efs"
  count  = local.efs_enabled ? 1 : 0

  name                       = "${var.project_name}-chat"
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.private_subnet_ids
  allowed_security_group_ids = { chat = local.service_security_groups.chat }
  posix_uid                  = 10001
  posix_gid                  = 10001
  root_directory             = "/p2pmesh-chat"
}

################################################################################
# signaling (seed 000: ECS + ElastiCache + ALB + WAF)

locals {
  signaling_environment = merge(
    {
      SIGNALING_ADDR                 = "0.0.0.0"
      SIGNALING_PORT                 = "8080"
      P2PMESH_ENV                    = var.p2pmesh_env
      P2PMESH_LIMITS_TRUSTED_PROXIES = local.vpc_cidrs
      P2PMESH_SIGNALING_AUTH         = var.signaling_auth
    },
    local.redis_enabled ? { SIGNALING_REDIS_REQUIRE_TLS = "true" } : {},
    var.signaling_public_url == null ? {} : { SIGNALING_PUBLIC_URL = var.signaling_public_url },
    var.signaling_environment,
  )

  signaling_secrets = merge(
    local.redis_enabled ? { SIGNALING_REDIS_URL = local.redis_url_secret_arn } : {},
    var.signaling_auth == "jwt" ? { JWT_SECRET = local.jwt_secret_arn } : {},
  )
}

module "signaling" {
  source = "./modules/ecs_service"
  count  = var.signaling_enabled ? 1 : 0

  name             = var.signaling_service_name
  role             = "signaling"
  cluster_arn      = aws_ecs_cluster.this[var.signaling_cluster_name].arn
  cluster_name     = var.signaling_cluster_name
  image            = var.image
  cpu_architecture = var.cpu_architecture
  cpu              = var.signaling_cpu
  memory           = var.signaling_memory
  desired_count    = var.signaling_desired_count
  container_ports  = [8080]

  environment        = local.signaling_environment
  secrets            = local.signaling_secrets
  log_group_name     = local.log_groups.signaling
  log_retention_days = var.log_retention_days.signaling

  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids
  ingress_rules = {
    alb = { port = 8080, description = "ALB: WebSocket, REST and health checks", source_security_group_id = module.alb[0].security_group_id }
  }
  load_balancers = {
    alb = { target_group_arn = module.alb[0].target_group_arns["signaling"], container_port = 8080 }
  }
  health_check_grace_period_seconds = 30

  depends_on = [aws_ecs_cluster_capacity_providers.this]
}

################################################################################
# chat (seed 002: FaltuBaat, nginx-rtmp sidecar, EFS, NLB 1935, JWT secret)

locals {
  chat_environment = merge(
    {
      PORT                           = "3000"
      NODE_ENV                       = var.p2pmesh_env
      AWS_REGION                     = var.aws_region
      P2PMESH_LIMITS_TRUSTED_PROXIES = local.vpc_cidrs
      # /stream/* callbacks come from the sidecar over localhost only.
      P2PMESH_CHAT_RTMP_ALLOW = "127.0.0.0/8, ::1/128"
    },
    local.chat_sqlite ? {
      DB_PATH                     = "${local.chat_data_dir}/data/p2pmesh.db"
      P2PMESH_CHAT_SQLITE_JOURNAL = "delete"
    } : {},
    local.chat_sqlite && var.chat_s3_backup_bucket != null ? {
      S3_SYNC_ENABLED = "true"
      S3_DB_BUCKET    = var.chat_s3_backup_bucket
      S3_DB_KEY       = var.chat_s3_backup_key
    } : {},
    local.redis_enabled ? { P2PMESH_REDIS_REQUIRE_TLS = "true" } : {},
    local.rtmp_enabled ? { P2PMESH_CHAT_RTMP_URL = "rtmp://${one(module.nlb[*].dns_name)}:1935/live" } : {},
    var.chat_environment,
  )

  chat_secrets = merge(
    { JWT_SECRET = local.jwt_secret_arn },
    local.redis_enabled ? { P2PMESH_REDIS_URL = local.redis_url_secret_arn } : {},
    local.chat_sqlite ? {} : { DATABASE_URL = var.chat_database_url_secret_arn },
  )

  # docker/nginx-rtmp: RTMP on 1935, HLS and /health on 8088; it calls the
  # chat role's /stream/* callbacks at CHAT_URL, here over the task's localhost.
  chat_rtmp_sidecars = local.rtmp_enabled ? [
    {
      name            = "nginx-rtmp"
      image           = var.chat_rtmp_image
      container_ports = [1935, 8088]
      environment     = { CHAT_URL = "http://127.0.0.1:3000" }
      log_group_name  = local.log_groups.nginx_rtmp
    },
  ] : []

  chat_s3_backup = var.chat_enabled && local.chat_sqlite && var.chat_s3_backup_bucket != null
}

data "aws_iam_policy_document" "chat_s3_backup" {
  count = local.chat_s3_backup ? 1 : 0

  statement {
    sid       = "BackupObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.chat_s3_backup_bucket}/${dirname(var.chat_s3_backup_key)}/*"]
  }

  statement {
    sid       = "BackupList"
    actions   = ["s3:ListBucket"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.chat_s3_backup_bucket}"]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${dirname(var.chat_s3_backup_key)}/*"]
    }
  }
}

module "chat" {
  source = "./modules/ecs_service"
  count  = var.chat_enabled ? 1 : 0

  name             = var.chat_service_name
  role             = "chat"
  container_name   = "chat-app"
  cluster_arn      = aws_ecs_cluster.this[var.chat_cluster_name].arn
  cluster_name     = var.chat_cluster_name
  image            = var.image
  cpu_architecture = var.cpu_architecture
  cpu              = var.chat_cpu
  memory           = var.chat_memory
  desired_count    = var.chat_desired_count
  container_ports  = [3000]

  environment        = local.chat_environment
  secrets            = local.chat_secrets
  log_group_name     = local.log_groups.chat
  log_retention_days = var.log_retention_days.chat

  efs_volume = local.efs_enabled ? {
    file_system_id   = module.efs[0].file_system_id
    file_system_arn  = module.efs[0].file_system_arn
    access_point_id  = module.efs[0].access_point_id
    access_point_arn = module.efs[0].access_point_arn
    container_path   = local.chat_data_dir
  } : null

  sidecars = local.chat_rtmp_sidecars

  task_role_policy_json = local.chat_s3_backup ? data.aws_iam_policy_document.chat_s3_backup[0].json : null

  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids
  ingress_rules = merge(
    { alb = { port = 3000, description = "ALB: web client, REST, WebSocket, health checks", source_security_group_id = module.alb[0].security_group_id } },
    local.rtmp_enabled ? {
      hls  = { port = 8088, description = "ALB: HLS and health checks of nginx-rtmp", source_security_group_id = module.alb[0].security_group_id }
      rtmp = { port = 1935, description = "NLB: RTMP publishers to nginx-rtmp", source_security_group_id = module.nlb[0].security_group_id }
    } : {},
  )
  load_balancers = merge(
    { alb = { target_group_arn = module.alb[0].target_group_arns["chat"], container_port = 3000 } },
    local.rtmp_enabled ? {
      hls  = { target_group_arn = module.alb[0].target_group_arns["chat-hls"], container_port = 8088, container_name = "nginx-rtmp" }
      rtmp = { target_group_arn = module.nlb[0].target_group_arns["rtmp"], container_port = 1935, container_name = "nginx-rtmp" }
    } : {},
  )
  health_check_grace_period_seconds = 60

  # One SQLite writer: stop the old task before the new one opens the file.
  deployment_minimum_healthy_percent = local.chat_sqlite ? 0 : 100
  deployment_maximum_percent         = local.chat_sqlite ? 100 : 200

  depends_on = [aws_ecs_cluster_capacity_providers.this]
}

################################################################################
# tunnel (seed 003: Fluidity, mTLS on 8443, desired count 0 = start on demand)

locals {
  tunnel_environment = merge(
    {
      FLUIDITY_LOG_LEVEL = var.tunnel_log_level
      METRICS_ENABLED    = "true"
      ECS_SERVICE_NAME   = var.tunnel_service_name
      ECS_CLUSTER_NAME   = var.tunnel_cluster_name
      AWS_REGION         = var.aws_region
      P2PMESH_ENV        = var.p2pmesh_env
    },
    var.tunnel_environment,
  )

  tunnel_secrets = {
    CERT_PEM = var.tunnel_cert_pem_secret_arn
    KEY_PEM  = var.tunnel_key_pem_secret_arn
    CA_PEM   = var.tunnel_ca_pem_secret_arn
  }
}

module "tunnel" {
  source = "./modules/ecs_service"
  count  = var.tunnel_enabled ? 1 : 0

  name             = var.tunnel_service_name
  family           = var.tunnel_service_name
  role             = "tunnel"
  container_name   = "server"
  cluster_arn      = aws_ecs_cluster.this[var.tunnel_cluster_name].arn
  cluster_name     = var.tunnel_cluster_name
  image            = var.image
  cpu_architecture = var.cpu_architecture
  cpu              = var.tunnel_cpu
  memory           = var.tunnel_memory
  desired_count    = var.tunnel_desired_count
  container_ports  = [8443, 8080]

  # Started and stopped outside Terraform (update-service --desired-count).
  ignore_desired_count_changes = true

  environment        = local.tunnel_environment
  secrets            = local.tunnel_secrets
  log_group_name     = local.log_groups.tunnel
  log_retention_days = var.log_retention_days.tunnel

  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids
  ingress_rules = {
    mtls  = { port = 8443, description = "NLB: agents (mTLS passthrough)", source_security_group_id = module.nlb[0].security_group_id }
    admin = { port = 8080, description = "NLB: health checks on the admin port", source_security_group_id = module.nlb[0].security_group_id }
  }
  load_balancers = {
    nlb = { target_group_arn = module.nlb[0].target_group_arns["tunnel"], container_port = 8443 }
  }
  health_check_grace_period_seconds = 30

  depends_on = [terraform_data.preconditions, aws_ecs_cluster_capacity_providers.this]
}

################################################################################
# game (seed 004: SnakeTron raft cluster on Fargate Spot, RDS discovery)

locals {
  game_environment = merge(
    {
      BIND_ADDR                      = "0.0.0.0"
      WS_PORT                        = "8080"
      GRPC_PORT                      = "50051"
      RAFT_PORT                      = "50052"
      P2PMESH_ENV                    = var.p2pmesh_env
      P2PMESH_LIMITS_TRUSTED_PROXIES = local.vpc_cidrs
    },
    var.game_environment,
  )

  game_secrets = merge(
    { JWT_SECRET = local.jwt_secret_arn },
    local.rds_enabled ? { DATABASE_URL = local.database_url_secret_arn } : {},
  )
}

module "game" {
  source = "./modules/ecs_service"
  count  = var.game_enabled ? 1 : 0

  name              = var.game_service_name
  family            = var.game_task_family
  role              = "game"
  cluster_arn       = aws_ecs_cluster.this[var.game_cluster_name].arn
  cluster_name      = var.game_cluster_name
  image             = var.image
  cpu_architecture  = var.cpu_architecture
  cpu               = var.game_cpu
  memory            = var.game_memory
  desired_count     = var.game_desired_count
  capacity_provider = var.game_use_spot ? "FARGATE_SPOT" : "FARGATE"
  container_ports   = [8080, 50051, 50052]

  environment        = local.game_environment
  secrets            = local.game_secrets
  log_group_name     = local.log_groups.game
  log_retention_days = var.log_retention_days.game
  health_check       = { start_period = 60 }

  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids
  ingress_rules = {
    alb  = { port = 8080, description = "ALB: web client, WebSocket, health checks", source_security_group_id = module.alb[0].security_group_id }
    peer = { port = 50051, description = "Peer link between game nodes", self = true }
    raft = { port = 50052, description = "Raft between game nodes", self = true }
  }
  load_balancers = {
    alb = { target_group_arn = module.alb[0].target_group_arns["game"], container_port = 8080 }
  }
  health_check_grace_period_seconds = 120

  deployment_minimum_healthy_percent = var.game_deployment_minimum_healthy_percent
  deployment_maximum_percent         = var.game_deployment_maximum_percent
  deployment_circuit_breaker         = { enable = true, rollback = true }

  autoscaling = {
    min_capacity       = var.game_min_count
    max_capacity       = var.game_max_count
    cpu_target         = 70
    memory_target      = 80
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
  }

  depends_on = [aws_ecs_cluster_capacity_providers.this]
}

################################################################################
# lambda (seed 001: API Gateway WebSocket + Lambda, DynamoDB connection store)

module "lambda" {
  source = "./modules/lambda_ws"
  count  = var.lambda_enabled ? 1 : 0

  name                           = "${var.project_name}-signaling-${var.stage}"
  stage_name                     = var.stage
  zip_path                       = var.lambda_zip_path
  architecture                   = var.lambda_architecture
  timeout                        = var.lambda_timeout
  memory_size                    = var.lambda_memory_size
  log_level                      = var.lambda_log_level
  log_retention_days             = var.log_retention_days.lambda
  environment                    = var.lambda_environment
  manage_account_cloudwatch_role = var.lambda_manage_apigateway_account_role

  depends_on = [terraform_data.preconditions]
}

################################################################################
# Alarms

module "alarms" {
  source = "./modules/alarms"

  name        = var.project_name
  alarm_email = var.alarm_email

  alb = local.alb_enabled ? {
    arn_suffix    = module.alb[0].arn_suffix
    target_groups = module.alb[0].target_group_arn_suffixes
  } : null

  nlb = local.nlb_enabled ? {
    arn_suffix    = module.nlb[0].arn_suffix
    target_groups = module.nlb[0].target_group_arn_suffixes
  } : null

  ecs_services = {
    for role, on in local.enabled : role => {
      cluster_name = local.cluster_of[role]
      service_name = { signaling = var.signaling_service_name, chat = var.chat_service_name, tunnel = var.tunnel_service_name, game = var.game_service_name }[role]
    } if on
  }

  ecs_min_running_tasks = var.game_enabled ? {
    game = { cluster_name = var.game_cluster_name, service_name = var.game_service_name, min_tasks = 3 }
  } : {}

  lambda_function_names   = var.lambda_enabled ? { lambda = module.lambda[0].function_name } : {}
  websocket_apis          = var.lambda_enabled ? { lambda = { api_id = module.lambda[0].api_id, stage = module.lambda[0].stage_name } } : {}
  redis_cache_cluster_ids = local.redis_enabled ? module.redis[0].member_cluster_ids : []
  rds_instance_ids        = local.rds_enabled ? { game = module.rds[0].instance_id } : {}
}
