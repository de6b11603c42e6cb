# redis: ElastiCache for Redis (cluster mode disabled) for the signaling
# cluster mode, chat fan-out and the lambda role's optional store. Owns the
# replication group with in-transit encryption (TLS), AUTH token and at-rest
# encryption, its subnet group and security group (Redis port from the
# services' groups only), and a Secrets Manager secret holding the whole
# rediss:// URL, since the URL carries the token.

locals {
  failover = var.num_cache_clusters > 1

  # Member clusters of a cluster-mode-disabled group are <id>-001, -002, ...
  member_cluster_ids = [for i in range(var.num_cache_clusters) : format("%s-%03d", var.name, i + 1)]
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-redis-"
  description = "ElastiCache ${var.name}: Redis from the p2pmesh services only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "Redis from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
  referenced_security_group_id = each.value
  tags                         = var.tags
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-redis"
  description = "Subnets of ${var.name}"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.name
  description          = "p2pmesh Redis (${var.name})"
  engine               = "redis"
  engine_version       = var.engine_version
  parameter_group_name = var.parameter_group_name
  node_type            = var.node_type
  num_cache_clusters   = var.num_cache_clusters
  port                 = var.port

  automatic_failover_enabled = local.failover
  multi_az_enabled           = local.failover

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.this.id]

  # AUTH only works over TLS; p2pmesh speaks TLS for rediss:// URLs.
  transit_encryption_enabled = true
  auth_token                 = var.auth_token
  at_rest_encryption_enabled = true

  snapshot_retention_limit   = var.snapshot_retention_limit
  maintenance_window         = var.maintenance_window
  auto_minor_version_upgrade = true
  apply_immediately          = var.apply_immediately

  tags = var.tags
}

resource "aws_secretsmanager_secret" "url" {
  name                    = coalesce(var.url_secret_name, "${var.name}/redis-url")
  description             = "rediss:// URL (with the AUTH token) of ElastiCache ${var.name}, for redis.url / SIGNALING_REDIS_URL"
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "rediss://:${urlencode(var.auth_token)}@${aws_elasticache_replication_group.this.primary_endpoint_address}:${var.port}"
}
