################################################################################
# Where and what

variable "aws_region" {
  description = "AWS region of every resource."
  type        = string
  default     = "us-east-1"
}

variable "project_name" {
  description = "Prefix of resource names (load balancers, data stores, secrets, alarms, the Lambda function)."
  type        = string
  default     = "p2pmesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.project_name))
    error_message = "project_name: 2-20 lowercase letters, digits or hyphens, starting with a letter (load balancer names are at most 32 characters)."
  }
}

variable "stage" {
  description = "Deployment stage: the API Gateway stage of the lambda role (wss://.../<stage>) and a tag."
  type        = string
  default     = "prod"

  validation {
    condition     = contains(["dev", "staging", "prod"], var.stage)
    error_message = "stage must be dev, staging or prod."
  }
}

variable "tags" {
  description = "Extra tags on every resource (added to Project, Stage and ManagedBy)."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "Existing VPC to deploy into."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more Availability Zones) for the ALB and the NLB."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "Give public subnets in at least two Availability Zones."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more Availability Zones, at most one per zone, with a NAT gateway or VPC endpoints for ECR, Logs and Secrets Manager) for the tasks, Redis, RDS and EFS."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Give private subnets in at least two Availability Zones."
  }
}

variable "image" {
  description = "p2pmesh container image (ECR URI with tag or digest); the same image runs every ECS role."
  type        = string

  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the ECS tasks: ARM64 or X86_64 (the image is built for both)."
  type        = string
  default     = "ARM64"

  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture must be ARM64 or X86_64."
  }
}

variable "p2pmesh_env" {
  description = "p2pmesh env key of the ECS roles: production turns unsafe defaults (a missing or weak jwt.secret) into startup errors."
  type        = string
  default     = "production"

  validation {
    condition     = contains(["development", "production"], var.p2pmesh_env)
    error_message = "p2pmesh_env must be development or production."
  }
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention per role, in days."
  type = object({
    signaling = optional(number, 30)
    chat      = optional(number, 30)
    tunnel    = optional(number, 14)
    game      = optional(number, 7)
    lambda    = optional(number, 30)
  })
  default = {}
}

variable "alarm_email" {
  description = "E-mail address that receives the alarms (it must confirm the SNS subscription). null: alarms go to the SNS topic only."
  type        = string
  default     = null
}

variable "secret_recovery_window_in_days" {
  description = "Recovery window of the secrets created here (0: delete at once on destroy)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30)
    error_message = "secret_recovery_window_in_days must be 0 or between 7 and 30."
  }
}

################################################################################
# Shared secrets

variable "jwt_secret_arn" {
  description = "Existing Secrets Manager secret holding the JWT HS256 key (32 bytes or more) shared by chat, game and (with signaling_auth = jwt) signaling. null: one is generated."
  type        = string
  default     = null
}

################################################################################
# Load balancing

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on the ALB (HTTP then redirects to HTTPS). null: HTTP only (WebSocket clients use ws://)."
  type        = string
  default     = null
}

variable "additional_certificate_arns" {
  description = "More ACM certificates for the ALB's HTTPS listener (SNI), e.g. one per role host name."
  type        = list(string)
  default     = []
}

variable "alb_ingress_cidrs" {
  description = "IPv4 CIDRs allowed to reach the ALB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_idle_timeout" {
  description = "ALB idle timeout in seconds: above ws.ping_interval (25 s) and below p2pmesh's http.keepalive_timeout (75 s)."
  type        = number
  default     = 60
}

variable "alb_default_role" {
  description = "Role that receives ALB requests no host rule matches (signaling, chat or game); the other ALB roles need host names."
  type        = string
  default     = "signaling"

  validation {
    condition     = contains(["signaling", "chat", "game"], var.alb_default_role)
    error_message = "alb_default_role must be signaling, chat or game."
  }
}

variable "alb_deny_path_patterns" {
  description = "Paths the ALB answers 403 itself (Prometheus /metrics stays internal)."
  type        = list(string)
  default     = ["/metrics"]
}

variable "waf_enabled" {
  description = "Attach a WAF web ACL with a per-IP rate-based rule to the ALB."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "Requests per client IP per 5 minutes before WAF blocks it (the signaling seed: 500)."
  type        = number
  default     = 500
}

################################################################################
# Redis (signaling cluster mode, chat fan-out)

variable "redis_enabled" {
  description = "Create ElastiCache Redis (TLS + AUTH) for signaling and chat when either is enabled. Off: each task keeps its state in memory (one signaling task then)."
  type        = bool
  default     = true
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "redis_num_cache_clusters" {
  description = "Redis nodes: 1, or 2+ for a replica with automatic failover."
  type        = number
  default     = 1
}

variable "redis_auth_token_secret_arn" {
  description = "Existing secret whose SecretString is the Redis AUTH token (16-128 characters). null: one is generated."
  type        = string
  default     = null
}

################################################################################
# signaling

variable "signaling_enabled" {
  description = "Run the signaling role (ECS service behind the ALB)."
  type        = bool
  default     = true
}

variable "signaling_desired_count" {
  description = "Signaling tasks (more than one needs Redis)."
  type        = number
  default     = 2
}

variable "signaling_cpu" {
  description = "Signaling task CPU units."
  type        = number
  default     = 256
}

variable "signaling_memory" {
  description = "Signaling task memory (MiB)."
  type        = number
  default     = 512
}

variable "signaling_cluster_name" {
  description = "ECS cluster of the signaling service (created; roles may share one)."
  type        = string
  default     = "p2pmesh"
}

variable "signaling_service_name" {
  description = "ECS service name of the signaling role."
  type        = string
  default     = "p2pmesh-signaling"
}

variable "signaling_hostnames" {
  description = "Host names routed to signaling on the ALB (needed unless signaling is alb_default_role)."
  type        = list(string)
  default     = []
}

variable "signaling_auth" {
  description = "signaling.auth: none, or jwt (every WebSocket upgrade presents an HS256 token signed with the shared JWT secret)."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "jwt"], var.signaling_auth)
    error_message = "signaling_auth must be none or jwt."
  }
}

variable "signaling_public_url" {
  description = "SIGNALING_PUBLIC_URL: the URL clients use (e.g. https://signal.example.org). null: derived by the server."
  type        = string
  default     = null
}

variable "signaling_environment" {
  description = "More plain environment of the signaling container (seed names or P2PMESH_<KEY>); no secrets."
  type        = map(string)
  default     = {}
}

################################################################################
# chat

variable "chat_enabled" {
  description = "Run the chat role (ECS service behind the ALB; SQLite on EFS unless chat_database_url_secret_arn is set)."
  type        = bool
  default     = true
}

variable "chat_desired_count" {
  description = "Chat tasks. With SQLite on EFS keep 1 (one writer); more need chat_database_url_secret_arn (PostgreSQL) and Redis."
  type        = number
  default     = 1
}

variable "chat_cpu" {
  description = "Chat task CPU units (shared with the nginx-rtmp sidecar)."
  type        = number
  default     = 512
}

variable "chat_memory" {
  description = "Chat task memory (MiB, shared with the nginx-rtmp sidecar)."
  type        = number
  default     = 1024
}

variable "chat_cluster_name" {
  description = "ECS cluster of the chat service (the FaltuBaat seed's name by default)."
  type        = string
  default     = "faltubaat-cluster"
}

variable "chat_service_name" {
  description = "ECS service name of the chat role (the FaltuBaat seed's name by default)."
  type        = string
  default     = "faltubaat-multi-service"
}

variable "chat_hostnames" {
  description = "Host names routed to chat on the ALB (needed unless chat is alb_default_role)."
  type        = list(string)
  default     = []
}

variable "chat_database_url_secret_arn" {
  description = "Existing secret holding a postgres:// URL for the chat role (DATABASE_URL). null: SQLite on EFS."
  type        = string
  default     = null
}

variable "chat_s3_backup_bucket" {
  description = "S3 bucket for the SQLite backups (S3_SYNC_ENABLED, S3_DB_BUCKET). null: no S3 backups (EFS is backed up by AWS Backup)."
  type        = string
  default     = null
}

variable "chat_s3_backup_key" {
  description = "Object key of the SQLite backup (S3_DB_KEY); the task may read, write and delete under its directory."
  type        = string
  default     = "faltubaat/database/faltubaat.db"
}

variable "chat_rtmp_image" {
  description = "The docker/nginx-rtmp image in ECR, run beside the chat container for live streams (RTMP 1935 through the NLB, HLS /hls/* on 8088 through the ALB; CHAT_URL is set to the task's localhost). null: no live streams, no RTMP listener."
  type        = string
  default     = null
}

variable "chat_rtmp_allowed_cidrs" {
  description = "IPv4 CIDRs allowed to publish RTMP on the NLB port 1935."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "chat_environment" {
  description = "More plain environment of the chat container (seed names or P2PMESH_<KEY>); no secrets."
  type        = map(string)
  default     = {}
}

################################################################################
# tunnel

variable "tunnel_enabled" {
  description = "Run the tunnel role (ECS service behind the NLB on 8443). Needs the three certificate secrets."
  type        = bool
  default     = false
}

variable "tunnel_desired_count" {
  description = "Initial tunnel tasks: 0 = start on demand (aws ecs update-service --desired-count 1); Terraform does not reset it afterwards."
  type        = number
  default     = 0
}

variable "tunnel_cpu" {
  description = "Tunnel task CPU units."
  type        = number
  default     = 256
}

variable "tunnel_memory" {
  description = "Tunnel task memory (MiB)."
  type        = number
  default     = 512
}

variable "tunnel_cluster_name" {
  description = "ECS cluster of the tunnel (the Fluidity seed's name; also its EMF ClusterName dimension)."
  type        = string
  default     = "fluidity"
}

variable "tunnel_service_name" {
  description = "ECS service name and task family of the tunnel (the Fluidity seed's name; also its EMF ServiceName dimension)."
  type        = string
  default     = "fluidity-server"
}

variable "tunnel_log_group_name" {
  description = "Log group of the tunnel (the Fluidity seed's name)."
  type        = string
  default     = "/fluidity/server"
}

variable "tunnel_log_level" {
  description = "FLUIDITY_LOG_LEVEL of the tunnel (debug, info, warn, error)."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.tunnel_log_level)
    error_message = "tunnel_log_level must be debug, info, warn or error."
  }
}

variable "tunnel_allowed_cidrs" {
  description = "IPv4 CIDRs allowed to reach the tunnel on the NLB port 8443 (restrict to your agents' addresses)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "tunnel_cert_pem_secret_arn" {
  description = "Secret holding the tunnel server's PEM certificate chain (CERT_PEM)."
  type        = string
  default     = null
}

variable "tunnel_key_pem_secret_arn" {
  description = "Secret holding the tunnel server's PEM private key (KEY_PEM)."
  type        = string
  default     = null
}

variable "tunnel_ca_pem_secret_arn" {
  description = "Secret holding the PEM CA that signs agent certificates (CA_PEM)."
  type        = string
  default     = null
}

variable "tunnel_environment" {
  description = "More plain environment of the tunnel container (e.g. P2PMESH_TUNNEL_ALLOW_CN); no secrets."
  type        = map(string)
  default     = {}
}

################################################################################
# game

variable "game_enabled" {
  description = "Run the game role (raft cluster on ECS behind the ALB, PostgreSQL discovery)."
  type        = bool
  default     = true
}

variable "game_desired_count" {
  description = "Initial game tasks (raft quorum: 3)."
  type        = number
  default     = 3
}

variable "game_min_count" {
  description = "Autoscaling minimum of game tasks."
  type        = number
  default     = 3
}

variable "game_max_count" {
  description = "Autoscaling maximum of game tasks."
  type        = number
  default     = 9
}

variable "game_cpu" {
  description = "Game task CPU units."
  type        = number
  default     = 256
}

variable "game_memory" {
  description = "Game task memory (MiB)."
  type        = number
  default     = 512
}

variable "game_use_spot" {
  description = "Run the game tasks on FARGATE_SPOT (a node hands its games over on the two-minute SIGTERM notice)."
  type        = bool
  default     = true
}

variable "game_cluster_name" {
  description = "ECS cluster of the game service (the SnakeTron seed's name)."
  type        = string
  default     = "snaketron-cluster"
}

variable "game_service_name" {
  description = "ECS service name of the game role (the SnakeTron seed's name)."
  type        = string
  default     = "snaketron-game-service"
}

variable "game_task_family" {
  description = "Task definition family of the game role (the SnakeTron seed's name)."
  type        = string
  default     = "snaketron-server"
}

variable "game_hostnames" {
  description = "Host names routed to game on the ALB (needed unless game is alb_default_role)."
  type        = list(string)
  default     = []
}

variable "game_deployment_minimum_healthy_percent" {
  description = "Rolling deployment lower bound. ECS rounds it up: 66 % of 3 keeps 2 running (67 % would keep all 3 and, with 133 %, leave no room to move)."
  type        = number
  default     = 66
}

variable "game_deployment_maximum_percent" {
  description = "Rolling deployment upper bound. ECS rounds it down: 134 % of 3 allows 1 extra task (133 % allows none)."
  type        = number
  default     = 134
}

variable "game_database_enabled" {
  description = "Create RDS PostgreSQL for the game's raft discovery (DATABASE_URL). Off: every game task is a lone node."
  type        = bool
  default     = true
}

variable "game_environment" {
  description = "More plain environment of the game container (e.g. P2PMESH_GAME_VOTERS); no secrets."
  type        = map(string)
  default     = {}
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "RDS storage (GiB, gp3)."
  type        = number
  default     = 20
}

variable "db_backup_retention_days" {
  description = "RDS automated backup retention (days)."
  type        = number
  default     = 1
}

variable "db_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "Protect the RDS instance from deletion."
  type        = bool
  default     = false
}

################################################################################
# lambda

variable "lambda_enabled" {
  description = "Deploy the lambda role (API Gateway WebSocket + Lambda + DynamoDB). Needs the zip from `make lambda-zip`."
  type        = bool
  default     = false
}

variable "lambda_zip_path" {
  description = "Path of the function zip, relative to where terraform runs (`make lambda-zip` writes p2pmesh-lambda-$(uname -m).zip at the top of the repository)."
  type        = string
  default     = "../../p2pmesh-lambda-aarch64.zip"
}

variable "lambda_architecture" {
  description = "Lambda instruction set: arm64 or x86_64, matching the machine that built the zip."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "lambda_timeout" {
  description = "Lambda timeout in seconds."
  type        = number
  default     = 30

  validation {
    condition     = var.lambda_timeout >= 1 && var.lambda_timeout <= 900
    error_message = "lambda_timeout must be between 1 and 900."
  }
}

variable "lambda_memory_size" {
  description = "Lambda memory in MB."
  type        = number
  default     = 512

  validation {
    condition     = var.lambda_memory_size >= 128 && var.lambda_memory_size <= 10240
    error_message = "lambda_memory_size must be between 128 and 10240."
  }
}

variable "lambda_log_level" {
  description = "log.level of the lambda role."
  type        = string
  default     = "info"
}

variable "lambda_environment" {
  description = "More environment of the function (P2PMESH_<KEY>, e.g. P2PMESH_ORIGIN_ALLOW); no secrets."
  type        = map(string)
  default     = {}
}

variable "lambda_manage_apigateway_account_role" {
  description = "Set this region's API Gateway CloudWatch role (needed once per account and region for stage logs; turn off if another stack owns it)."
  type        = bool
  default     = true
}
