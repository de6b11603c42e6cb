variable "name" {
  description = "Replication group id and prefix of the subnet group, security group and secret (lowercase, at most 40 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.name))
    error_message = "name: 2-40 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the cache."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the cache subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect on the Redis port, by a static key (the ECS services using Redis)."
  type        = map(string)
  default     = {}
}

variable "engine_version" {
  description = "Redis engine version."
  type        = string
  default     = "7.1"
}

variable "parameter_group_name" {
  description = "Parameter group (must match the engine version's family)."
  type        = string
  default     = "default.redis7"
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "num_cache_clusters" {
  description = "Nodes in the replication group: 1 (primary only) or more (primary plus replicas, with automatic failover and Multi-AZ)."
  type        = number
  default     = 1

  validation {
    condition     = var.num_cache_clusters >= 1 && var.num_cache_clusters <= 6
    error_message = "num_cache_clusters must be between 1 and 6."
  }
}

variable "port" {
  description = "Redis port."
  type        = number
  default     = 6379
}

variable "auth_token" {
  description = "Redis AUTH token (16-128 printable characters; only ! & # $ ^ < > - besides letters and digits). Requires and implies in-transit encryption."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.auth_token) >= 16 && length(var.auth_token) <= 128 && can(regex("^[A-Za-z0-9!&#$^<>-]+$", var.auth_token))
    error_message = "auth_token must be 16-128 characters of letters, digits and ! & # $ ^ < > -."
  }
}

variable "snapshot_retention_limit" {
  description = "Days of automatic snapshots (0: none)."
  type        = number
  default     = 1
}

variable "maintenance_window" {
  description = "Weekly maintenance window (UTC), ddd:hh24:mi-ddd:hh24:mi."
  type        = string
  default     = "sun:05:00-sun:06:00"
}

variable "apply_immediately" {
  description = "Apply changes now instead of in the maintenance window."
  type        = bool
  default     = false
}

variable "url_secret_name" {
  description = "Name of the Secrets Manager secret that receives the connection URL rediss://:TOKEN@HOST:PORT. Defaults to <name>/redis-url."
  type        = string
  default     = null
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted secret can be restored (0: delete at once, so the name can be reused right away)."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
}
